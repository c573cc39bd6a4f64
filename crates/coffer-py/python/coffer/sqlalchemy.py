"""Coffer for SQLAlchemy 2: the ``Encrypted`` column types, blind-index comparisons and the
re-encryption job.

.. code-block:: python

    import uuid
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
    from coffer.sqlalchemy import (EncryptedText, BlindIndex, PrefixIndex, KeyVersion)

    class Base(DeclarativeBase):
        pass

    class Patient(Base):
        __tablename__ = "patients"
        __table_args__ = {"info": {"coffer_scope": "table:patients"}}   # default table:<name>
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
        ssn: Mapped[str] = mapped_column(EncryptedText())
        ssn_bidx: Mapped[bytes | None] = mapped_column(BlindIndex("ssn", bits=32, normalize=["digits"]))
        email: Mapped[str] = mapped_column(EncryptedText())
        email_prefix = mapped_column(PrefixIndex("email", normalize=["trim", "casefold"], prefix=(3, 8)))
        key_version: Mapped[int | None] = mapped_column(KeyVersion())

    session.scalars(select(Patient).where(Patient.ssn == "123-45-6789"))     # via ssn_bidx
    session.scalars(select(Patient).where(Patient.email.startswith("ann")))  # via email_prefix

Values are sealed during the flush (``before_insert`` / ``before_update``) with the row's
primary key as context, and opened when rows load (``load`` / ``refresh``), so mapped objects
always hold plaintext. Core queries that select an encrypted column get
:class:`coffer._table.Stored` objects: open them with :func:`open_value`.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy import event, inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import operators
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import iterate
from sqlalchemy.types import Integer, LargeBinary, TypeDecorator

import coffer
from coffer import values as _values
from coffer._native import CofferError, ConfigError, Keyring, Table
from coffer._table import ColumnDef, IndexDef, Sealed, Stored, TableDef, placeholders, row_context, scope_value

__all__ = [
    "BlindIndex",
    "Encrypted",
    "EncryptedBoolean",
    "EncryptedBytes",
    "EncryptedDate",
    "EncryptedDateTime",
    "EncryptedInteger",
    "EncryptedJSON",
    "EncryptedText",
    "EncryptedUUID",
    "KeyVersion",
    "PrefixIndex",
    "RowKey",
    "configure",
    "open_value",
    "reencrypt",
    "table_for",
]

_lock = threading.Lock()
_keyring: Keyring | None = None
_bound: dict[int, tuple[TableDef, Table]] = {}
_scopes_ready: set[str] = set()


def configure(keyring: Keyring | None) -> None:
    """Sets the keyring the integration uses (default: :func:`coffer.default_keyring`)."""
    global _keyring
    with _lock:
        _keyring = keyring
        _bound.clear()


def _ring() -> Keyring:
    return _keyring or coffer.default_keyring()


# ---- column types -----------------------------------------------------------------------------


class Encrypted(TypeDecorator):
    """An encrypted column (BYTEA): ``Encrypted("text")``, or one of the typed subclasses.

    ``mode``: "randomized" (default), "randomized-tag128" or "deterministic"; ``nulls``:
    "passthrough" (default) or "authenticated"; ``column_id``: the logical id bound into the
    AAD (default ``<table>.<column>``).
    """

    impl = LargeBinary
    cache_ok = True
    value_type = "bytes"

    def __init__(
        self,
        value_type: str | None = None,
        *,
        mode: str = "randomized",
        nulls: str = "passthrough",
        column_id: str | None = None,
    ) -> None:
        super().__init__()
        if value_type is not None:
            if value_type not in _values.VALUE_TYPES:
                raise ConfigError(f"unknown value type {value_type!r}")
            self.value_type = value_type
        self.mode = mode
        self.nulls = nulls
        self.column_id = column_id

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Sealed):
            return bytes(value)
        raise CofferError(
            "an encrypted column binds only values sealed during an ORM flush; a plaintext "
            "cannot go through a Core insert()/update(): add the object to a Session instead"
        )

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else Stored(bytes(value))

    class comparator_factory(TypeDecorator.Comparator):  # noqa: N801 (SQLAlchemy's name)
        """``==``, ``in_`` and ``startswith`` through the column's blind or prefix index."""

        def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
            col = self.expr
            if op is operators.eq:
                return _eq(col, [_plain(other[0])])
            if op is operators.in_op:
                return _eq(col, [_plain(v) for v in other[0]])
            if op is operators.startswith_op:
                return _prefix(col, _plain(other[0]))
            if op is operators.is_ or op is operators.is_not:
                return super().operate(op, *other, **kwargs)
            raise CofferError(
                f"column {col.name!r} is encrypted: compare it with ==, in_() (blind index) or "
                ".startswith() (prefix index) only"
            )


class EncryptedText(Encrypted):
    """str, sealed as UTF-8."""

    value_type = "text"
    cache_ok = True


EncryptedString = EncryptedText


class EncryptedBytes(Encrypted):
    """bytes."""

    value_type = "bytes"
    cache_ok = True


class EncryptedInteger(Encrypted):
    """int (64-bit)."""

    value_type = "int"
    cache_ok = True


class EncryptedBoolean(Encrypted):
    """bool."""

    value_type = "bool"
    cache_ok = True


class EncryptedDate(Encrypted):
    """datetime.date."""

    value_type = "date"
    cache_ok = True


class EncryptedDateTime(Encrypted):
    """aware datetime.datetime (UTC microseconds)."""

    value_type = "timestamp"
    cache_ok = True


class EncryptedJSON(Encrypted):
    """Any JSON value (RFC 8785 canonical form)."""

    value_type = "json"
    cache_ok = True


class EncryptedUUID(Encrypted):
    """uuid.UUID."""

    value_type = "uuid"
    cache_ok = True


class BlindIndex(TypeDecorator):
    """The blind index (BYTEA) of the encrypted column named ``of``."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, of: str, *, bits: int = 32, normalize: Iterable[str] = ()) -> None:
        super().__init__()
        self.of = of
        self.bits = bits
        self.normalize = tuple(normalize)


class PrefixIndex(TypeDecorator):
    """Prefix tokens (BYTEA[], PostgreSQL; give it a GIN index) of the column named ``of``."""

    impl = ARRAY(LargeBinary)
    cache_ok = True

    def __init__(
        self, of: str, *, bits: int = 32, normalize: Iterable[str] = (), prefix: tuple[int, int] = (3, 8)
    ) -> None:
        super().__init__()
        self.of = of
        self.bits = bits
        self.normalize = tuple(normalize)
        self.prefix = (int(prefix[0]), int(prefix[1]))


class KeyVersion(TypeDecorator):
    """The key version the row was sealed under (filled in on every flush)."""

    impl = Integer
    cache_ok = True


class RowKey(TypeDecorator):
    """With ``info={"coffer_keys": "row"}``: the row's own data key, wrapped under the row's
    scope (BYTEA; filled in on every flush). Setting it to NULL erases the row's values."""

    impl = LargeBinary
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else bytes(value)


# ---- the table of a mapped class ---------------------------------------------------------------


def _definition(table: sa.Table) -> TableDef:
    enc = [c for c in table.columns if isinstance(c.type, Encrypted)]
    ver = [c for c in table.columns if isinstance(c.type, KeyVersion)]
    if len(ver) != 1:
        raise ConfigError(
            f"table {table.name!r}: a table with encrypted columns needs exactly one KeyVersion "
            f"column (it has {len(ver)})"
        )
    pk = list(table.primary_key.columns)
    row_id = table.info.get("coffer_row_id") or (pk[0].name if len(pk) == 1 else None)
    if row_id is None:
        raise ConfigError(f"table {table.name!r}: set info['coffer_row_id'] (no single-column primary key)")
    names = {c.name for c in enc}
    indexes = []
    for c in table.columns:
        t = c.type
        if isinstance(t, (BlindIndex, PrefixIndex)):
            if t.of not in names:
                raise ConfigError(f"{table.name}.{c.name}: of={t.of!r} names no encrypted column")
            indexes.append(
                IndexDef(c.name, (t.of,), bits=t.bits, normalize=t.normalize, prefix=getattr(t, "prefix", None))
            )
    name = f"{table.schema}.{table.name}" if table.schema else table.name
    scope = table.info.get("coffer_scope") or f"table:{table.name}"
    for p in placeholders(scope):
        c = table.columns.get(p)
        if c is None:
            raise ConfigError(f"table {table.name!r}: coffer_scope {scope!r}: {{{p}}} names no column of the table")
        if isinstance(c.type, (Encrypted, BlindIndex, PrefixIndex, KeyVersion, RowKey)):
            raise ConfigError(
                f"table {table.name!r}: coffer_scope {scope!r}: {{{p}}} names a Coffer column; a placeholder "
                "takes a plaintext column of the row (a tenant or subject id)"
            )
    keys = table.info.get("coffer_keys") or "scope"
    rk = [c for c in table.columns if isinstance(c.type, RowKey)]
    if keys not in ("scope", "row"):
        raise ConfigError(f"table {table.name!r}: coffer_keys = {keys!r}: \"scope\" (default) or \"row\"")
    if keys == "row" and len(rk) != 1:
        raise ConfigError(
            f"table {table.name!r}: coffer_keys = \"row\" keeps each row's key in a RowKey column; the table "
            f"has {len(rk)} (add row_key = mapped_column(RowKey(), nullable=True))"
        )
    if keys == "scope" and rk:
        raise ConfigError(f"table {table.name!r}: {rk[0].name} is a RowKey column: set info['coffer_keys'] = 'row'")
    return TableDef(
        name=name,
        scope=scope,
        row_id=row_id,
        version_column=ver[0].name,
        columns=tuple(
            ColumnDef(c.name, c.type.value_type, mode=c.type.mode, nulls=c.type.nulls, column_id=c.type.column_id)
            for c in enc
        ),
        indexes=tuple(indexes),
        table_id=table.info.get("coffer_table_id"),
        keys="row" if rk else None,
        row_key=rk[0].name if rk else None,
        create_scopes=table.info.get("coffer_create_scopes"),
    )


def table_for(table: Any) -> tuple[TableDef, Table]:
    """The Coffer definition and :class:`coffer.Table` of a ``sqlalchemy.Table`` or mapped
    class."""
    if not isinstance(table, sa.Table):
        table = inspect(table).local_table
    key = id(table)
    got = _bound.get(key)
    if got is None:
        with _lock:
            got = _bound.get(key)
            if got is None:
                d = _definition(table)
                got = (d, d.bind(_ring()))
                _bound[key] = got
    return got


def _ensure_scope(d: TableDef) -> None:
    if d.placeholders:  # a template: the Rust side creates a tenant's scope on its first write
        return
    if d.scope not in _scopes_ready:
        _ring().ensure_scope(d.scope)
        _scopes_ready.add(d.scope)


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, sa.sql.elements.BindParameter) else v


def _eq(col: Any, values: list[Any], scopes: list[dict[str, str]] | None = None) -> Any:
    d, t = table_for(col.table)
    ix = d.index_for(col.name, prefix=False)
    deterministic = ix is None and col.type.mode == "deterministic"
    if ix is None and not deterministic:
        raise CofferError(f"column {col.name!r} is encrypted and has no BlindIndex: add one to compare it")
    if d.placeholders and scopes is None:
        return _ScopedSearch(col, values=values)
    vt = col.type.value_type
    terms: list[bytes] = []
    if scopes != []:
        for v in values:
            if deterministic:
                terms.extend(t.search_deterministic(col.name, _values.encode(vt, v), scope=scopes).terms)
            else:
                terms.extend(t.search_eq(ix.name, [_values.encode(vt, v)], scope=scopes).terms)
    if deterministic:  # the column itself, compared as bytes
        return sa.type_coerce(col, LargeBinary).in_(terms)
    return col.table.c[ix.name].in_(terms)


def _prefix(col: Any, prefix: Any, scopes: list[dict[str, str]] | None = None) -> Any:
    d, t = table_for(col.table)
    ix = d.index_for(col.name, prefix=True)
    if ix is None:
        raise CofferError(f"column {col.name!r} is encrypted and has no PrefixIndex: add one for startswith")
    if d.placeholders and scopes is None:
        return _ScopedSearch(col, prefix=prefix)
    if scopes == []:
        return sa.false()
    terms = t.search_prefix(ix.name, prefix, scope=scopes).terms
    return col.table.c[ix.name].op("&&")(sa.literal(terms, ARRAY(LargeBinary)))


class _ScopedSearch(ColumnElement):
    """A search on a table with a scope template: its terms depend on the scopes the
    statement's WHERE names (``Patient.tenant_id == "acme"`` or ``.in_([...])``), so they are
    computed when the statement compiles (such statements are not cached)."""

    inherit_cache = False
    type = sa.Boolean()

    def __init__(self, col: Any, values: list[Any] | None = None, prefix: Any = None) -> None:
        self.col = col
        self.values = values
        self.prefix = prefix

    @property
    def _from_objects(self) -> list[Any]:
        return self.col._from_objects


def _same_column(c: Any, table: sa.Table, name: str) -> bool:
    return getattr(c, "name", None) == name and getattr(getattr(c, "table", None), "name", None) == table.name


def _statement_scopes(statement: Any, col: Any) -> list[dict[str, str]]:
    """The scopes a statement's WHERE names for `col`'s table: ``placeholder == value`` and
    ``placeholder.in_([...])`` (several of them: their intersection; several placeholders: every
    combination)."""
    d, _ = table_for(col.table)
    table = col.table
    found: dict[str, list[Any] | None] = {p: None for p in d.placeholders}
    for el in iterate(statement):
        if not isinstance(el, sa.sql.elements.BinaryExpression):
            continue
        for p in found:
            if not _same_column(el.left, table, p) or not isinstance(el.right, BindParameter):
                continue
            if el.operator is operators.eq:
                vals = [el.right.effective_value]
            elif el.operator is operators.in_op:
                vals = list(el.right.effective_value or [])
            else:
                continue
            prev = found[p]
            found[p] = vals if prev is None else [v for v in prev if v in vals]
    missing = [p for p, v in found.items() if v is None]
    if missing:
        need = " and ".join(f"{table.name}.{m} == …" for m in missing)
        raise ConfigError(
            f"column {col.name!r} of {table.name!r} is sealed per scope ({d.scope!r}): add {need} to the "
            f"WHERE clause (or .in_([…]) for several); a search is computed for the scopes the statement "
            "names and finds only their rows"
        )
    cols = list(found)
    values = [[scope_value(c, v) for v in found[c] or []] for c in cols]
    return [dict(zip(cols, combo)) for combo in itertools.product(*values)]


@compiles(_ScopedSearch)
def _compile_scoped(element: _ScopedSearch, compiler: Any, **kw: Any) -> str:
    scopes = _statement_scopes(compiler.statement, element.col)
    if element.values is not None:
        expr = _eq(element.col, element.values, scopes)
    else:
        expr = _prefix(element.col, element.prefix, scopes)
    return compiler.process(expr, **kw)


def open_value(
    table: Any,
    column: str,
    row_id: Any,
    stored: Stored | None,
    *,
    scope: dict[str, Any] | None = None,
    row_key: bytes | None = None,
) -> Any:
    """Opens a value a Core query returned (``Stored``) with its row id; for a table with a
    scope template, ``scope`` gives the row's placeholder values (``{"tenant_id": "acme"}``),
    and with per-row keys ``row_key`` the row's key column."""
    if stored is None:
        return None
    d, t = table_for(table)
    vt = next(c.value_type for c in d.columns if c.name == column)
    sc = None if scope is None else {k: scope_value(k, v) for k, v in scope.items()}
    plain = t.open(column, row_context(row_id), stored.data, scope=sc, row_key=row_key)
    return None if plain is None else _values.decode(vt, plain)


# ---- ORM events --------------------------------------------------------------------------------


class _Mapped:
    """What the events need of one mapper: attribute keys of each Coffer column."""

    def __init__(self, mapper: Mapper) -> None:
        self.table = mapper.local_table
        d, _ = table_for(self.table)
        key = {c.name: mapper.get_property_by_column(c).key for c in self.table.columns}
        self.enc = [(c.name, key[c.name], c.value_type) for c in d.columns]
        self.idx = [(i.name, key[i.name]) for i in d.indexes]
        self.ver = key[d.version_column]
        self.row = key[d.row_id]
        self.row_col = self.table.c[d.row_id]
        # (column, attribute key) of each placeholder; the row key's attribute.
        self.scope = [(p, key[p]) for p in d.placeholders]
        self.row_key = key[d.row_key] if d.row_key else None

    def scope_of(self, values: Any) -> dict[str, str] | None:
        """The placeholder values of a row (`values`: the object's __dict__ or state dict)."""
        if not self.scope:
            return None
        return {col: scope_value(col, values.get(k)) for col, k in self.scope}

    def row_key_of(self, values: Any) -> bytes | None:
        if self.row_key is None:
            return None
        v = values.get(self.row_key)
        return None if v is None else bytes(v)

    def row_id(self, target: Any) -> str:
        v = getattr(target, self.row)
        if v is None:
            default = self.row_col.default
            if default is not None and default.is_callable:
                v = default.arg(None)
                setattr(target, self.row, v)
            elif default is not None and default.is_scalar:
                v = default.arg
                setattr(target, self.row, v)
        return row_context(v)


_mapped: dict[type, _Mapped] = {}


def _open_loaded(target: Any, *_: Any) -> None:
    m = _mapped.get(type(target))
    if m is None:
        return
    d, t = table_for(m.table)
    state = inspect(target)
    row = None
    scope = rk = None
    for col, key, vt in m.enc:
        v = state.dict.get(key)
        if isinstance(v, Stored):
            if row is None:
                row = row_context(state.dict.get(m.row))
                scope = m.scope_of(state.dict)
                rk = m.row_key_of(state.dict)
            plain = t.open(col, row, v.data, scope=scope, row_key=rk)
            set_committed_value(target, key, None if plain is None else _values.decode(vt, plain))


def _seal(mapper: Mapper, connection: Any, target: Any, insert: bool) -> None:
    m = _mapped[type(target)]
    state = inspect(target)
    if not insert:
        keys = [k for _, k, _ in m.enc] + [m.row] + [k for _, k in m.scope]
        if not any(state.attrs[k].history.has_changes() for k in keys):
            return
    d, t = table_for(m.table)
    _ensure_scope(d)
    row = m.row_id(target)
    values_now = {k: getattr(target, k) for _, k in m.scope}
    scope = m.scope_of(values_now)
    rk = None
    if m.row_key is not None:
        # The stored key (an update keeps it); a new row, or one whose key was set to None,
        # gets a fresh one.
        current = getattr(target, m.row_key)
        rk = None if insert or current is None else bytes(current)
    plains = {}
    canon = []
    for col, key, vt in m.enc:
        v = getattr(target, key)
        if isinstance(v, Stored):  # not loaded through the ORM events (should not happen)
            raw = t.open(col, row, v.data, scope=scope, row_key=rk)
            v = None if raw is None else _values.decode(vt, raw)
        plains[key] = v
        canon.append((col, None if v is None else _values.encode(vt, v)))
    values, indexes, version, new_key = t.seal_row(row, canon, scope=scope, row_key=rk)
    target.__dict__["_coffer_plain"] = plains
    for col, key, _ in m.enc:
        c = values.get(col)
        setattr(target, key, None if c is None else Sealed(c))
    for name, key in m.idx:
        setattr(target, key, indexes.get(name))
    setattr(target, m.ver, version)
    if m.row_key is not None:
        setattr(target, m.row_key, new_key)


def _restore(mapper: Mapper, connection: Any, target: Any) -> None:
    plains = target.__dict__.pop("_coffer_plain", None)
    if plains:
        for key, v in plains.items():
            set_committed_value(target, key, v)


@event.listens_for(Mapper, "mapper_configured")
def _configured(mapper: Mapper, class_: type) -> None:
    table = mapper.local_table
    if not isinstance(table, sa.Table) or not any(isinstance(c.type, Encrypted) for c in table.columns):
        return
    if class_ in _mapped:
        return
    _mapped[class_] = _Mapped(mapper)
    event.listen(mapper, "before_insert", lambda m, c, t: _seal(m, c, t, True))
    event.listen(mapper, "before_update", lambda m, c, t: _seal(m, c, t, False))
    event.listen(mapper, "after_insert", _restore)
    event.listen(mapper, "after_update", _restore)
    event.listen(class_, "load", _open_loaded)
    event.listen(class_, "refresh", _open_loaded)


def reencrypt(
    table: Any, database_url: str, *, batch_size: int = 1000, workers: int = 1, max_rows: int | None = None
) -> dict[str, Any]:
    """Runs the re-encryption job (``coffer reencrypt``) on a mapped class's table."""
    _, t = table_for(table)
    return t.reencrypt(database_url, batch_size=batch_size, workers=workers, max_rows=max_rows)
