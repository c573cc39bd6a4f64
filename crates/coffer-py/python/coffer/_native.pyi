"""Type stubs of coffer._native, the Rust extension module (crates/coffer-py/src)."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, Protocol

_Data = bytes | bytearray | str
_Components = _Data | Sequence[_Data]
_Scope = dict[str, str]

class CofferError(Exception):
    """Base class of every error Coffer raises."""

class DecryptionError(CofferError):
    """A value did not authenticate (tampered, another row/column/scope/type, not a ciphertext)."""

class KeyDestroyed(CofferError):
    """The scope or key version was crypto-shredded."""

class UnknownKey(CofferError):
    """The scope, or the key version a value names, does not exist."""

class ConfigError(CofferError):
    """coffer.toml, a KEK reference, a column schema or an argument is wrong."""

class KeyStoreError(CofferError):
    """The key store, the database or a KEK provider failed or is unreachable."""

class KeyStateError(CofferError):
    """The key's state forbids the request."""

class Keyring:
    """A keyring opened from coffer.toml (lazily; anew in a forked child)."""

    def __init__(self, config: str | PathLike[str] | None = None) -> None: ...
    @staticmethod
    def from_toml(text: str) -> Keyring: ...
    def open(self) -> None: ...
    def encrypt(
        self,
        scope: str,
        column: str,
        plaintext: _Data | None,
        *,
        context: _Components | None = None,
        domain: _Components | None = None,
        type: str = "bytes",
        mode: str = "randomized",
    ) -> bytes: ...
    def decrypt(
        self,
        scope: str,
        column: str,
        ciphertext: _Data,
        *,
        context: _Components | None = None,
        domain: _Components | None = None,
        type: str = "bytes",
    ) -> bytes | str | None: ...
    def encrypt_batch(
        self,
        scope: str,
        column: str,
        plaintexts: Sequence[_Data],
        *,
        contexts: Sequence[_Components | None] | None = None,
        domain: _Components | None = None,
        type: str = "bytes",
        mode: str = "randomized",
    ) -> list[bytes]: ...
    def decrypt_batch(
        self,
        scope: str,
        column: str,
        ciphertexts: Sequence[_Data],
        *,
        contexts: Sequence[_Components | None] | None = None,
        domain: _Components | None = None,
        type: str = "bytes",
    ) -> list[bytes | str | None]: ...
    def blind_index(
        self, scope: str, column: str, name: str, values: _Components, *, bits: int = 32, normalize: Sequence[str] = ()
    ) -> bytes: ...
    def blind_index_terms(
        self, scope: str, column: str, name: str, values: _Components, *, bits: int = 32, normalize: Sequence[str] = ()
    ) -> list[bytes]: ...
    def column(self, scope: str, column: str, *, type: str = "bytes", mode: str = "randomized") -> Column: ...
    def create_scope(self, scope: str) -> int: ...
    def ensure_scope(self, scope: str) -> int: ...
    def rotate(self, scope: str) -> int: ...
    def destroy(self, scope: str) -> int: ...
    def active_version(self, scope: str) -> int: ...
    def clear_cache(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

class Column:
    """One column of one scope bound to a keyring (`Keyring.column`): the fastest single-value path."""

    def encrypt(
        self, plaintext: _Data | None, *, context: _Components | None = None, domain: _Components | None = None
    ) -> bytes: ...
    def decrypt(
        self, ciphertext: _Data, *, context: _Components | None = None, domain: _Components | None = None
    ) -> bytes | str | None: ...
    def encrypt_batch(
        self,
        plaintexts: Sequence[_Data],
        *,
        contexts: Sequence[_Components | None] | None = None,
        domain: _Components | None = None,
    ) -> list[bytes]: ...
    def decrypt_batch(
        self,
        ciphertexts: Sequence[_Data],
        *,
        contexts: Sequence[_Components | None] | None = None,
        domain: _Components | None = None,
    ) -> list[bytes | str | None]: ...

class Search:
    """Blind-index search terms and the check that confirms a decrypted candidate."""

    @property
    def terms(self) -> list[bytes]: ...
    @property
    def index(self) -> str: ...
    def matches(self, values: Sequence[_Data]) -> bool: ...

class Ciphertext:
    """A ciphertext made for one write (what an encrypted Django field binds)."""

    def __init__(self, data: bytes) -> None: ...
    @property
    def data(self) -> bytes: ...
    def __len__(self) -> int: ...

class Table:
    """One table's encrypted columns (coffer-postgres) bound to a keyring."""

    def __init__(self, keyring: Keyring, spec_json: str) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def placeholders(self) -> list[str]: ...
    @property
    def row_key_column(self) -> str | None: ...
    def seal_row(
        self,
        row: str,
        values: Sequence[tuple[str, bytes | None]],
        *,
        scope: _Scope | None = None,
        row_key: bytes | None = None,
    ) -> tuple[dict[str, bytes | str | None], dict[str, bytes | list[bytes] | None], int, bytes | None]: ...
    def seal_rows(
        self,
        rows: Sequence[tuple[str, Sequence[tuple[str, bytes | None]]]],
        *,
        scope: _Scope | None = None,
        row_keys: Sequence[bytes | None] | None = None,
    ) -> list[tuple[dict[str, bytes | str | None], dict[str, bytes | list[bytes] | None], int, bytes | None]]: ...
    def seal_many(
        self,
        flat: list[str | bytes | None],
        wrap: Callable[[bytes], Any],
        *,
        scope: _Scope | None = None,
        row_keys: Sequence[bytes | None] | None = None,
    ) -> list[Any]: ...
    @property
    def column_names(self) -> list[str]: ...
    @property
    def index_names(self) -> list[str]: ...
    def open(
        self, column: str, row: str, value: _Data, *, scope: _Scope | None = None, row_key: bytes | None = None
    ) -> bytes | None: ...
    def search_eq(
        self, index: str, values: Sequence[_Data], *, scope: _Scope | Sequence[_Scope] | None = None
    ) -> Search: ...
    def search_deterministic(
        self, column: str, value: _Data, *, scope: _Scope | Sequence[_Scope] | None = None
    ) -> Search: ...
    def search_prefix(self, index: str, prefix: str, *, scope: _Scope | Sequence[_Scope] | None = None) -> Search: ...
    def reencrypt(
        self, database_url: str, *, batch_size: int = 1000, workers: int = 1, max_rows: int | None = None
    ) -> dict[str, Any]: ...

class FieldKey:
    """A column key from a raw key reference, as `coffer field --key` uses."""

    def __init__(
        self, key: str, *, scope: str = "default", column: str = "default", version: int = 1, mode: str = "randomized"
    ) -> None: ...
    def encrypt(
        self,
        plaintext: _Data | None,
        *,
        context: _Components | None = None,
        domain: _Components | None = None,
        type: str = "bytes",
    ) -> bytes: ...
    def decrypt(
        self,
        ciphertext: _Data,
        *,
        context: _Components | None = None,
        domain: _Components | None = None,
        type: str = "bytes",
    ) -> bytes | str | None: ...

class _Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...

class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...

class EncryptingWriter:
    """A writable stream that encrypts into `target` (the `coffer file` message format)."""

    def __init__(
        self,
        target: _Writable,
        *,
        keyring: Keyring | None = None,
        scope: str | None = None,
        kek: str | None = None,
        key_name: str = "default/v1",
        context: Sequence[tuple[str, str]] | None = None,
        frame_size: int = 65536,
    ) -> None: ...
    def write(self, data: bytes) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def writable(self) -> bool: ...
    def readable(self) -> bool: ...
    def flush(self) -> None: ...
    def __enter__(self) -> EncryptingWriter: ...
    def __exit__(self, *exc: object) -> bool: ...

class DecryptingReader:
    """A readable stream that decrypts `source`; frames are released once authenticated."""

    def __init__(
        self, source: _Readable, *, keyring: Keyring | None = None, scope: str | None = None, kek: str | None = None
    ) -> None: ...
    def read(self, size: int = -1) -> bytes: ...
    def context(self) -> list[tuple[str, str]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def readable(self) -> bool: ...
    def writable(self) -> bool: ...
    def __enter__(self) -> DecryptingReader: ...
    def __exit__(self, *exc: object) -> bool: ...

def canonical_json(text: str) -> bytes: ...
def canonical_json_of(value: object) -> bytes | None: ...
def to_text(ciphertext: bytes) -> str: ...
def from_text(value: str) -> bytes: ...
