"""Table definitions shared by the Django and SQLAlchemy integrations.

Both describe a model's encrypted columns in the form of coffer-columns.toml's ``[[table]]``
(docs/COLUMNS.md) and hand it to :class:`coffer.Table`, so a model's ciphertexts, blind
indexes, prefix tokens and version column are exactly those of the Rust library and of
``coffer reencrypt``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from coffer._native import ConfigError, Keyring, Table


@dataclass(frozen=True)
class ColumnDef:
    """An encrypted column: SQL name, value type, mode and NULL handling."""

    name: str
    value_type: str
    mode: str = "randomized"
    nulls: str = "passthrough"
    column_id: str | None = None


@dataclass(frozen=True)
class IndexDef:
    """A blind index (BYTEA) or prefix index (BYTEA[]) over encrypted columns."""

    name: str
    columns: tuple[str, ...]
    bits: int = 32
    normalize: tuple[str, ...] = ()
    prefix: tuple[int, int] | None = None


@dataclass(frozen=True)
class TableDef:
    """A table's encrypted columns, indexes, scope, row id and version column."""

    name: str
    scope: str
    row_id: str
    version_column: str
    columns: tuple[ColumnDef, ...]
    indexes: tuple[IndexDef, ...] = field(default=())
    table_id: str | None = None
    # "row": a data key per row, stored wrapped in the column `row_key` (docs/COLUMNS.md §8).
    keys: str | None = None
    row_key: str | None = None
    # Whether a write to a scope that does not exist yet creates it (None: the Rust default,
    # yes for a scope template).
    create_scopes: bool | None = None

    def spec(self) -> dict[str, Any]:
        """The definition as the Rust side reads it."""
        cols = []
        for c in self.columns:
            d: dict[str, Any] = {"name": c.name, "type": c.value_type, "mode": c.mode, "nulls": c.nulls}
            if c.column_id:
                d["id"] = c.column_id
            cols.append(d)
        ixs = []
        for i in self.indexes:
            d = {"name": i.name, "columns": list(i.columns), "bits": i.bits, "normalize": list(i.normalize)}
            if i.prefix is not None:
                d["prefix"] = list(i.prefix)
            ixs.append(d)
        spec: dict[str, Any] = {
            "name": self.name,
            "scope": self.scope,
            "row_id": self.row_id,
            "version_column": self.version_column,
            "column": cols,
            "index": ixs,
        }
        if self.table_id:
            spec["id"] = self.table_id
        if self.keys:
            spec["keys"] = self.keys
        if self.row_key:
            spec["row_key"] = self.row_key
        if self.create_scopes is not None:
            spec["create_scopes"] = self.create_scopes
        return spec

    @property
    def placeholders(self) -> list[str]:
        """The scope template's placeholders (column names); empty for a fixed scope."""
        return placeholders(self.scope)

    def bind(self, keyring: Keyring) -> Table:
        """A :class:`coffer.Table` for this definition on ``keyring``."""
        return Table(keyring, json.dumps(self.spec()))

    def index_for(self, column: str, prefix: bool) -> IndexDef | None:
        """The single-column index over ``column`` (a prefix index if ``prefix``)."""
        for i in self.indexes:
            if i.columns == (column,) and (i.prefix is not None) == prefix:
                return i
        return None


class Sealed(bytes):
    """A ciphertext produced for one save; the only value an encrypted column binds."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<coffer ciphertext, {len(self)} bytes>"


class Stored:
    """A ciphertext as read from the database, not opened yet (no row context at hand).

    Its repr shows the length only.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | None) -> None:
        # None: an SQL NULL read from a column that seals NULLs (an error when opened).
        self.data = None if data is None else bytes(data)

    def __repr__(self) -> str:
        if self.data is None:
            return "<coffer: SQL NULL in an authenticated-NULL column>"
        return f"<coffer ciphertext, {len(self.data)} bytes, not decrypted>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stored) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)


def row_context(value: Any) -> str:
    """The text form of a row id, as PostgreSQL prints ``id::text`` (the row context)."""
    if value is None:
        raise ConfigError(
            "the row id is not known before the INSERT; encrypted values are bound to their row, "
            "so give the model a client-side primary key (e.g. UUIDField(default=uuid.uuid4))"
        )
    if isinstance(value, bool):
        raise ConfigError("a bool cannot be a row id")
    return str(value)


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def placeholders(scope: str) -> list[str]:
    """The ``{name}`` placeholders of a scope template, in order, each once."""
    out: list[str] = []
    for m in _PLACEHOLDER.finditer(scope):
        if m.group(1) not in out:
            out.append(m.group(1))
    return out


def rename_placeholders(scope: str, rename: Any) -> str:
    """The template with each placeholder ``{name}`` replaced by ``{rename(name)}``."""
    return _PLACEHOLDER.sub(lambda m: "{" + rename(m.group(1)) + "}", scope)


def scope_value(column: str, value: Any) -> str:
    """A row's value of a placeholder column in text form (an id: str, int or UUID)."""
    if value is None:
        raise ConfigError(
            f"the row's {column} is not set: it names the row's scope (its tenant or subject), so "
            "set it before saving or reading encrypted values"
        )
    if isinstance(value, bool):
        raise ConfigError(f"{column}: a bool cannot name a scope")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigError(f"{column}: bytes cannot name a scope (use a str, int or UUID)")
    return str(value)


def unique(seq: Sequence[str]) -> bool:
    return len(set(seq)) == len(seq)
