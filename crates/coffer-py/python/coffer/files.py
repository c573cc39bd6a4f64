"""Files and streams in the message format of ``coffer file`` (the AWS Encryption SDK's).

.. code-block:: python

    import coffer
    from coffer.files import EncryptingWriter, DecryptingReader, encrypt_file, decrypt_file

    keyring = coffer.default_keyring()
    encrypt_file("scan.dcm", "scan.cfr", keyring=keyring, scope="tenant:acme")
    with open("scan.cfr", "rb") as f, DecryptingReader(f, keyring=keyring, scope="tenant:acme") as r:
        head = r.read(1024)

    with open("dump.cfr", "wb") as f, EncryptingWriter(f, kek="env:COFFER_KEY") as w:
        w.write(b"...")                       # complete once the block exits without error

A frame is returned by a reader only after it authenticated; a truncated, reordered or altered
message raises :class:`coffer.DecryptionError`. Keys: a key-store scope (``keyring`` and
``scope``, like ``coffer file --scope``; destroying the scope shreds the file) or a KEK
reference (``kek="env:VAR"`` or ``"file:PATH"``, like ``--kek``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from coffer._native import DecryptingReader, EncryptingWriter, Keyring

__all__ = ["DecryptingReader", "EncryptingWriter", "decrypt_file", "encrypt_file"]

_CHUNK = 1 << 20


def encrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    keyring: Keyring | None = None,
    scope: str | None = None,
    kek: str | None = None,
    context: Mapping[str, str] | None = None,
    frame_size: int = 65536,
) -> None:
    """Encrypts the file ``src`` into ``dst`` (written beside it, renamed when complete)."""
    tmp = f"{os.fspath(dst)}.partial"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            w = EncryptingWriter(
                fout, keyring=keyring, scope=scope, kek=kek,
                context=list((context or {}).items()), frame_size=frame_size,
            )
            with w:
                while chunk := fin.read(_CHUNK):
                    w.write(chunk)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def decrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    keyring: Keyring | None = None,
    scope: str | None = None,
    kek: str | None = None,
) -> dict[str, str]:
    """Decrypts ``src`` into ``dst`` (renamed into place only once every frame authenticated).
    Returns the message's authenticated context."""
    tmp = f"{os.fspath(dst)}.partial"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            with DecryptingReader(fin, keyring=keyring, scope=scope, kek=kek) as r:
                ctx: Any = dict(r.context())
                while chunk := r.read(_CHUNK):
                    fout.write(chunk)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ctx
