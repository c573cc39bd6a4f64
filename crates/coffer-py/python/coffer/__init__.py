"""Coffer for Python: application-layer encryption on the Coffer Rust core.

Field values are sealed inside your process before they reach the database, under scoped,
versioned keys from the same key store (SQLite or PostgreSQL), KEKs and two-tier cache as the
``coffer`` CLI, and byte-compatible with everything else Coffer writes. docs/PYTHON.md is the
guide.

- :class:`Keyring`: opened from coffer.toml, lazily and again after ``fork()``; ``encrypt``,
  ``decrypt``, ``blind_index`` and their batch forms (GIL released, all cores);
  ``Keyring.column(scope, column)`` gives a :class:`Column`, the fastest single-value path.
- :class:`Table`: one table's encrypted columns; the Django fields (:mod:`coffer.django`) and
  SQLAlchemy types (:mod:`coffer.sqlalchemy`) are built on it.
- :func:`encrypt_file`, :func:`decrypt_file`, :class:`EncryptingWriter`,
  :class:`DecryptingReader`: files and streams in the AWS Encryption SDK message format, as
  ``coffer file`` writes them (:mod:`coffer.files`).
- :class:`FieldKey`: a column key from a raw key reference, as ``coffer field --key`` uses.
- Errors: :class:`CofferError` and its subclasses :class:`DecryptionError`,
  :class:`KeyDestroyed`, :class:`UnknownKey`, :class:`ConfigError`, :class:`KeyStoreError`,
  :class:`KeyStateError`. No message, repr or traceback holds a key or a plaintext.
"""

from __future__ import annotations

import os
import threading

from coffer._native import (
    CofferError,
    Column,
    ConfigError,
    DecryptingReader,
    DecryptionError,
    EncryptingWriter,
    FieldKey,
    KeyDestroyed,
    Keyring,
    KeyStateError,
    KeyStoreError,
    Search,
    Table,
    UnknownKey,
    canonical_json,
    from_text,
    to_text,
)
from coffer.files import decrypt_file, encrypt_file
from coffer.values import VALUE_TYPES, decode, encode

__all__ = [
    "CofferError",
    "Column",
    "ConfigError",
    "DecryptingReader",
    "DecryptionError",
    "EncryptingWriter",
    "FieldKey",
    "KeyDestroyed",
    "KeyStateError",
    "KeyStoreError",
    "Keyring",
    "Search",
    "Table",
    "UnknownKey",
    "VALUE_TYPES",
    "canonical_json",
    "decode",
    "decrypt_file",
    "default_keyring",
    "encode",
    "encrypt_file",
    "from_text",
    "set_default_keyring",
    "to_text",
]

_default: Keyring | None = None
_default_lock = threading.Lock()


def default_keyring() -> Keyring:
    """The process-wide keyring: the one given to :func:`set_default_keyring`, else one
    configured by ``COFFER_CONFIG`` (or ``coffer.toml`` in the working directory). Creating it
    reads nothing; keys are loaded on first use, in each process after a fork."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Keyring(os.environ.get("COFFER_CONFIG") or None)
        return _default


def set_default_keyring(keyring: Keyring | None) -> None:
    """Sets (or with ``None`` resets) the keyring the integrations use by default."""
    global _default
    with _default_lock:
        _default = keyring
