"""Encrypted Django model fields, their blind-index companions and lookups.

How a save works: the first Coffer field Django prepares for a save seals the whole row once
(every encrypted value with the row id as context, every blind index, the key version) through
:class:`coffer.Table`; the other fields of that row take their part of the result. How a read
works: the database value stays sealed on the instance until the attribute is first read, then
it is opened with the row id and cached. A value that fails to authenticate raises
:class:`coffer.DecryptionError` at that read.
"""

from __future__ import annotations

import datetime
import itertools
import threading
import uuid
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from django.core import checks
from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import connections, models
from django.db.models import signals
from django.db.models.expressions import Col
from django.db.models.lookups import Lookup
from django.db.models.sql.where import AND, WhereNode

import coffer
from coffer import values as _values
from coffer._native import Ciphertext, CofferError, ConfigError, DecryptionError, Keyring, Table
from coffer._table import (
    ColumnDef,
    IndexDef,
    Stored,
    TableDef,
    placeholders,
    rename_placeholders,
    row_context,
    scope_value,
)

_lock = threading.Lock()
_keyring: Keyring | None = None
_scopes_ready: set[str] = set()


def keyring() -> Keyring:
    """The keyring of the Django integration: ``settings.COFFER["CONFIG"]`` if set, else
    :func:`coffer.default_keyring`. Created once; opened lazily (after a fork, anew)."""
    global _keyring
    with _lock:
        if _keyring is None:
            from django.conf import settings

            conf = getattr(settings, "COFFER", {}) or {}
            path = conf.get("CONFIG")
            _keyring = Keyring(str(path)) if path else coffer.default_keyring()
        return _keyring


def _settings() -> dict[str, Any]:
    from django.conf import settings

    return getattr(settings, "COFFER", {}) or {}


# ---- the table of a model ----------------------------------------------------------------


def _scope_of_model(model: type[models.Model]) -> tuple[str, list[tuple[str, str]]]:
    """The model's scope template with placeholders as SQL columns, and (column, attname) of
    each placeholder. A placeholder names a plain field of the model (its name or column); an
    encrypted field, an index, the version or the row key is refused, naming it."""
    opts = model._meta
    label = opts.label
    text = getattr(model, "coffer_scope", None) or f"table:{opts.db_table}"
    fields: list[tuple[str, str]] = []

    def column(name: str) -> str:
        try:
            f = opts.get_field(name)
        except FieldDoesNotExist:
            f = next((x for x in opts.concrete_fields if x.column == name or x.attname == name), None)
        if f is None or not getattr(f, "concrete", False) or f.many_to_many:
            raise ConfigError(f"{label}.coffer_scope {text!r}: {{{name}}} names no field of the model")
        if isinstance(f, (EncryptedField, _IndexField, KeyVersionField, RowKeyField)):
            raise ConfigError(
                f"{label}.coffer_scope {text!r}: {{{name}}} names the Coffer field {f.name!r}; a placeholder "
                "takes a plaintext field of the row (a tenant or subject id)"
            )
        if (f.column, f.attname) not in fields:
            fields.append((f.column, f.attname))
        return f.column

    return rename_placeholders(text, column), fields


def _check_model(sender: type[models.Model], **kwargs: Any) -> None:
    """At class setup (class_prepared): the scope template's placeholders and the row-key
    setting, so a mistake fails at import, naming the field."""
    if sender._meta.abstract or sender._meta.proxy or sender.__module__ == "__fake__":
        return  # (migrations' historical models carry no class attributes such as coffer_scope)
    _scope_of_model(sender)
    _row_key_field(sender)


def _row_key_field(model: type[models.Model]) -> "RowKeyField | None":
    opts = model._meta
    keys = getattr(model, "coffer_keys", None) or "scope"
    rk = [f for f in opts.concrete_fields if isinstance(f, RowKeyField)]
    if keys not in ("scope", "row"):
        raise ConfigError(f"{opts.label}.coffer_keys = {keys!r}: \"scope\" (default) or \"row\"")
    if keys == "row" and len(rk) != 1:
        raise ConfigError(
            f"{opts.label}: coffer_keys = \"row\" keeps each row's key in a RowKeyField; the model has "
            f"{len(rk)} (add row_key = RowKeyField())"
        )
    if keys == "scope" and rk:
        raise ConfigError(f"{opts.label}.{rk[0].name} is a RowKeyField: set coffer_keys = \"row\" on the model")
    return rk[0] if rk else None


class _ModelTable:
    """The Coffer definition of one model and its bound :class:`coffer.Table`."""

    def __init__(self, model: type[models.Model]) -> None:
        opts = model._meta
        enc = [f for f in opts.concrete_fields if isinstance(f, EncryptedField)]
        idx = [f for f in opts.concrete_fields if isinstance(f, _IndexField)]
        ver = [f for f in opts.concrete_fields if isinstance(f, KeyVersionField)]
        label = opts.label
        scope, scope_fields = _scope_of_model(model)
        rkf = _row_key_field(model)
        if len(ver) != 1:
            raise ConfigError(
                f"{label}: a model with encrypted fields needs exactly one KeyVersionField "
                f"(it has {len(ver)}); the re-encryption job reads it"
            )
        row_attr = getattr(model, "coffer_row_id", None) or opts.pk.name
        row_field = opts.get_field(row_attr)
        by_name = {f.name: f for f in enc}
        indexes = []
        for f in idx:
            src = by_name.get(f.of)
            if src is None:
                raise ConfigError(f"{label}.{f.name}: of={f.of!r} names no encrypted field of the model")
            indexes.append(
                IndexDef(
                    name=f.column,
                    columns=(src.column,),
                    bits=f.bits,
                    normalize=tuple(f.normalize),
                    prefix=getattr(f, "prefix", None),
                )
            )
        self.definition = TableDef(
            name=opts.db_table,
            scope=scope,
            row_id=row_field.column,
            version_column=ver[0].column,
            columns=tuple(
                ColumnDef(f.column, f.value_type, mode=f.mode, nulls=f.nulls, column_id=f.column_id)
                for f in enc
            ),
            indexes=tuple(indexes),
            table_id=getattr(model, "coffer_table_id", None),
            keys="row" if rkf is not None else None,
            row_key=rkf.column if rkf is not None else None,
            create_scopes=bool(_settings().get("CREATE_SCOPES", True)) if scope_fields else None,
        )
        self.model = model
        # (column, attname) of each placeholder of the scope template (none: a fixed scope).
        self.scope_fields = scope_fields
        self.row_key_attr = rkf.attname if rkf is not None else None
        self.encrypted = enc
        self.row_attr = row_field.attname
        self.table: Table = self.definition.bind(keyring())
        self.index_fields = {f.name: f for f in idx}
        # Positions in the flat tuple Table.seal_many returns for a row: the ciphertexts in
        # the table's column order, then the indexes, then the key version.
        names = self.table.column_names
        by_column = {f.column: f for f in enc}
        for i, name in enumerate(names):
            by_column[name]._coffer_slot = i
        for j, name in enumerate(self.table.index_names):
            next(f for f in idx if f.column == name)._coffer_slot = len(names) + j
        ver[0]._coffer_slot = len(names) + len(self.table.index_names)
        self.width = len(names) + len(self.table.index_names) + 1
        if rkf is not None:  # seal_many appends the row key after the version
            rkf._coffer_slot = self.width
            self.width += 1
        # (attname, encoder) per encrypted column, in that order.
        self.encoders = [(by_column[n].attname, _encoder(by_column[n])) for n in names]

    def row(self, instance: models.Model) -> str:
        return row_context(getattr(instance, self.row_attr))

    def scope_of(self, instance: models.Model) -> dict[str, str] | None:
        """The row's placeholder values (None for a fixed scope)."""
        if not self.scope_fields:
            return None
        return {col: scope_value(attname, getattr(instance, attname)) for col, attname in self.scope_fields}

    def row_key_of(self, instance: models.Model) -> bytes | None:
        """The row's stored key (None: a new row, or an erased key)."""
        if self.row_key_attr is None:
            return None
        v = getattr(instance, self.row_key_attr)
        return None if v is None else bytes(v)

    def ensure_scope(self) -> None:
        if self.scope_fields:  # a template: the Rust side creates a tenant's scope (create_scopes)
            return
        scope = self.definition.scope
        if scope in _scopes_ready or not _settings().get("CREATE_SCOPES", True):
            return
        keyring().ensure_scope(scope)
        _scopes_ready.add(scope)


_tables: dict[type, _ModelTable] = {}
_tables_lock = threading.Lock()


def table_for(model: type[models.Model]) -> _ModelTable:
    """The Coffer table of a model (built on first use)."""
    model = model._meta.concrete_model or model
    t = _tables.get(model)
    if t is None:
        with _tables_lock:
            t = _tables.get(model)
            if t is None:
                t = _ModelTable(model)
                _tables[model] = t
    return t


# ---- sealing a row -----------------------------------------------------------------------
#
# A row is sealed once per write: the first Coffer field Django prepares seals every value,
# index and the version, and the row's other Coffer fields take their part. The result lives
# on the instance only for that write: the pre_save signal (save) and CofferQuerySet.bulk_create
# clear it before, post_save and bulk_create after. A batch shares one flat result list
# (Table.seal_many): each instance keeps the list and where its row starts, so a bulk insert
# allocates no container per row (those made the cyclic GC run again and again).

_CACHE = "_coffer_sealed"
_AT = "_coffer_at"


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_MISSING = object()


def _encoder(f: "EncryptedField") -> Any:
    """The canonical encoding of one field's values (coffer.values.encode), with a shortcut
    for the exact types most columns hold."""
    vt = f.value_type

    def slow(v: Any) -> bytes:
        return _values.encode(vt, f.normalize_value(v))

    if vt == "text" and type(f).normalize_value is EncryptedField.normalize_value:
        return lambda v: v.encode() if type(v) is str else slow(v)
    if vt == "date" and type(f).normalize_value is EncryptedDateField.normalize_value:
        date = datetime.date
        return lambda v: (
            (v.toordinal() - _EPOCH_ORDINAL).to_bytes(4, "big", signed=True) if type(v) is date else slow(v)
        )
    return slow


def _plains(mt: _ModelTable, instance: models.Model, out: list[Any]) -> None:
    """Appends the row id and the row's canonical values (in the table's column order) to
    `out`, the flat input of Table.seal_many."""
    out.append(mt.row(instance))
    d = instance.__dict__
    for attname, encode in mt.encoders:
        v = d.get(attname, _MISSING)
        if v is _MISSING or type(v) is Stored:
            v = getattr(instance, attname)  # loads a deferred value, opens a stored one
        out.append(None if v is None else encode(v))


def _sealed(instance: models.Model, field: models.Field) -> Any:
    """The item of `field` in the row's sealed part for the write under way (ciphertexts, indexes,
    version: see _ModelTable), sealing the row first if no batch did."""
    d = instance.__dict__
    res = d.get(_CACHE)
    if res is None:
        mt = table_for(type(instance))
        mt.ensure_scope()
        flat: list[Any] = []
        _plains(mt, instance, flat)
        row_keys = None if mt.row_key_attr is None else [mt.row_key_of(instance)]
        res = d[_CACHE] = mt.table.seal_many(flat, Ciphertext, scope=mt.scope_of(instance), row_keys=row_keys)
        d[_AT] = 0
    return res[d[_AT] + field._coffer_slot]


def _forget(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    instance.__dict__.pop(_CACHE, None)
    instance.__dict__.pop(_AT, None)


def seal_instances(instances: Sequence[models.Model]) -> None:
    """Seals many instances for the write that follows: one call (GIL released) per scope."""
    if not instances:
        return
    mt = table_for(type(instances[0]))
    mt.ensure_scope()
    groups: dict[Any, list[models.Model]] = {}
    scopes: dict[Any, dict[str, str] | None] = {None: None}
    if not mt.scope_fields:  # a fixed scope: one batch, no per-row work
        groups[None] = list(instances)
    else:
        for inst in instances:
            sc = mt.scope_of(inst)
            key = tuple(sorted(sc.items())) if sc else None
            groups.setdefault(key, []).append(inst)
            scopes[key] = sc
    width = mt.width
    for key, group in groups.items():
        flat: list[Any] = []
        for i in group:
            _plains(mt, i, flat)
        row_keys = None if mt.row_key_attr is None else [mt.row_key_of(i) for i in group]
        res = mt.table.seal_many(flat, Ciphertext, scope=scopes[key], row_keys=row_keys)
        for k, inst in enumerate(group):
            d = inst.__dict__
            d[_CACHE] = res
            d[_AT] = k * width


class CofferQuerySet(models.QuerySet):
    """A QuerySet whose ``bulk_create`` seals all rows in one batch call first."""

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list[models.Model]:
        objs = list(objs)
        for o in objs:
            _forget(None, o)
        seal_instances(objs)
        try:
            return super().bulk_create(objs, *args, **kwargs)
        finally:
            for o in objs:
                _forget(None, o)


CofferManager = models.Manager.from_queryset(CofferQuerySet)
CofferManager.__doc__ = "A manager whose bulk_create seals every row in one batch call."


# ---- the descriptor ----------------------------------------------------------------------


class _Descriptor:
    """Holds the plaintext on the instance; opens a stored ciphertext on first read."""

    def __init__(self, field: "EncryptedField") -> None:
        self.field = field

    def __get__(self, instance: models.Model | None, owner: type) -> Any:
        if instance is None:
            return self
        name = self.field.attname
        d = instance.__dict__
        if name not in d:
            instance.refresh_from_db(fields=[name])
        v = d[name]
        if isinstance(v, Stored):
            v = self.field.open(instance, v)
            d[name] = v
        return v

    def __set__(self, instance: models.Model, value: Any) -> None:
        instance.__dict__[self.field.attname] = value


# ---- encrypted fields --------------------------------------------------------------------


class EncryptedField(models.Field):
    """Base of the encrypted fields: stores the ciphertext in BYTEA.

    Options: ``mode`` ("randomized", default; "randomized-tag128"; "deterministic"), ``nulls``
    ("passthrough", default: SQL NULL stays NULL; "authenticated": NULL is sealed too),
    ``column_id`` (the logical id bound into the AAD; default ``<table>.<column>``: set it
    before renaming a column).
    """

    value_type = "bytes"
    descriptor_class = _Descriptor
    empty_strings_allowed = False

    def __init__(
        self,
        *args: Any,
        mode: str = "randomized",
        nulls: str = "passthrough",
        column_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.mode = mode
        self.nulls = nulls
        self.column_id = column_id
        if kwargs.get("db_index") or kwargs.get("unique"):
            raise ConfigError(
                "an encrypted field cannot be db_index or unique: ciphertexts are randomized; "
                "add a BlindIndexField for lookups"
            )
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if self.mode != "randomized":
            kwargs["mode"] = self.mode
        if self.nulls != "passthrough":
            kwargs["nulls"] = self.nulls
        if self.column_id:
            kwargs["column_id"] = self.column_id
        return name, path, args, kwargs

    def get_internal_type(self) -> str:
        return "BinaryField"

    def contribute_to_class(self, cls: type[models.Model], name: str, private_only: bool = False) -> None:
        super().contribute_to_class(cls, name, private_only=private_only)
        if not cls._meta.abstract:
            uid = f"coffer-{cls.__module__}.{cls.__qualname__}"
            signals.pre_save.connect(_forget, sender=cls, weak=False, dispatch_uid=uid + "-pre")
            signals.post_save.connect(_forget, sender=cls, weak=False, dispatch_uid=uid + "-post")
            signals.class_prepared.connect(_check_model, sender=cls, weak=False, dispatch_uid=uid + "-check")

    def db_type(self, connection: Any) -> str | None:
        return models.BinaryField().db_type(connection)

    def normalize_value(self, value: Any) -> Any:
        """The value as its canonical type expects it (e.g. a date from a datetime)."""
        return value

    # Reading: keep the ciphertext until the attribute is read.
    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return Stored(None) if self.nulls == "authenticated" else None
        return Stored(bytes(value))

    def to_python(self, value: Any) -> Any:
        return value

    def open(self, instance: models.Model, stored: Stored) -> Any:
        if stored.data is None:
            raise DecryptionError(
                f"{self.model._meta.label}.{self.name}: SQL NULL in a column with authenticated "
                "NULLs: the value was removed without the key"
            )
        mt = table_for(type(instance))
        plain = mt.table.open(
            self.column, mt.row(instance), stored.data, scope=mt.scope_of(instance), row_key=mt.row_key_of(instance)
        )
        return None if plain is None else _values.decode(self.value_type, plain)

    # Writing: the row is sealed once, each field binds its ciphertext.
    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        return _sealed(model_instance, self)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None:
            return None
        if type(value) is Ciphertext:
            return value.data
        raise CofferError(
            f"{self.model._meta.label}.{self.name} is encrypted: a plaintext cannot be written "
            "by QuerySet.update() or a raw expression; assign it on the instance and save()"
        )

    def get_prep_value(self, value: Any) -> Any:
        return value

    def value_to_string(self, obj: models.Model) -> str:
        v = self.value_from_object(obj)
        return "" if v is None else str(v)

    def formfield(self, **kwargs: Any) -> Any:
        """The form field of the plaintext's type (forms and the admin see plaintext)."""
        from django import forms

        cls = {
            "text": forms.CharField,
            "int": forms.IntegerField,
            "bool": forms.BooleanField,
            "date": forms.DateField,
            "timestamp": forms.DateTimeField,
            "json": forms.JSONField,
            "uuid": forms.UUIDField,
        }.get(self.value_type)
        if cls is None:
            return None
        defaults: dict[str, Any] = {"form_class": cls}
        if self.value_type == "text" and getattr(self, "max_length", None):
            defaults["max_length"] = self.max_length
        if isinstance(self, EncryptedEmailField):
            defaults["form_class"] = forms.EmailField
        if self.value_type == "bool":
            defaults["required"] = False
        defaults.update(kwargs)
        return super().formfield(**defaults)

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name in _LOOKUPS:
            return _LOOKUPS[lookup_name]
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        raise FieldError(
            f"{self.model._meta.label}.{self.name} is encrypted: the only lookups are exact, in "
            "(through a BlindIndexField), startswith/istartswith (through a PrefixIndexField) "
            "and isnull"
        )

    def get_transform(self, lookup_name: str) -> Any:
        return None

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        if self.mode not in ("randomized", "randomized-tag128", "deterministic"):
            errors.append(checks.Error(f"mode {self.mode!r} is not a Coffer mode", obj=self, id="coffer.E001"))
        if self.nulls not in ("passthrough", "authenticated"):
            errors.append(checks.Error(f"nulls {self.nulls!r}: passthrough or authenticated", obj=self, id="coffer.E002"))
        if not any(isinstance(f, KeyVersionField) for f in self.model._meta.concrete_fields):
            errors.append(
                checks.Error(
                    "a model with encrypted fields needs a KeyVersionField",
                    hint="add key_version = KeyVersionField()",
                    obj=self,
                    id="coffer.E003",
                )
            )
        return errors


class EncryptedBinaryField(EncryptedField):
    """bytes, sealed as they are."""

    value_type = "bytes"


class EncryptedTextField(EncryptedField):
    """str (any length), sealed as UTF-8."""

    value_type = "text"


class EncryptedCharField(EncryptedTextField):
    """str with a ``max_length`` checked by validation (the ciphertext column is BYTEA)."""

    def __init__(self, *args: Any, max_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_length = max_length
        if max_length is not None:
            from django.core.validators import MaxLengthValidator

            self.validators.append(MaxLengthValidator(max_length))

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        return name, path, args, kwargs


class EncryptedEmailField(EncryptedCharField):
    """An e-mail address (validated like EmailField), sealed as UTF-8."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 254)
        super().__init__(*args, **kwargs)
        from django.core.validators import validate_email

        self.validators.append(validate_email)


class EncryptedIntegerField(EncryptedField):
    """int (64-bit), sealed as i64 big-endian."""

    value_type = "int"


class EncryptedBooleanField(EncryptedField):
    """bool."""

    value_type = "bool"


class EncryptedDateField(EncryptedField):
    """datetime.date, sealed as days since 1970-01-01."""

    value_type = "date"

    def normalize_value(self, value: Any) -> Any:
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, str):
            return datetime.date.fromisoformat(value)
        return value


class EncryptedDateTimeField(EncryptedField):
    """An aware datetime.datetime, sealed as UTC microseconds (naive values are refused)."""

    value_type = "timestamp"


class EncryptedJSONField(EncryptedField):
    """Any JSON value, sealed in RFC 8785 canonical form."""

    value_type = "json"


class EncryptedUUIDField(EncryptedField):
    """uuid.UUID, sealed as 16 bytes."""

    value_type = "uuid"

    def normalize_value(self, value: Any) -> Any:
        return uuid.UUID(str(value)) if not isinstance(value, uuid.UUID) else value


# ---- companions ----------------------------------------------------------------------------


class _IndexField(models.Field):
    """A column the row's sealing fills in; never assigned by hand."""

    def __init__(self, *args: Any, of: str, bits: int = 32, normalize: Iterable[str] = (), **kwargs: Any) -> None:
        self.of = of
        self.bits = bits
        self.normalize = list(normalize)
        kwargs.setdefault("null", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs.update(of=self.of, bits=self.bits)
        if self.normalize:
            kwargs["normalize"] = self.normalize
        kwargs.pop("null", None)
        kwargs.pop("editable", None)
        return name, path, args, kwargs

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        return _sealed(model_instance, self)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return value


class BlindIndexField(_IndexField):
    """The blind index (BYTEA) of encrypted field ``of``: ``bits`` wide (see
    ``coffer index plan``), after ``normalize`` (trim, casefold, nfc, digits, last:N).
    ``filter(<of>=value)`` and ``filter(<of>__in=[...])`` search through it."""

    def db_type(self, connection: Any) -> str | None:
        return models.BinaryField().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        return value if value is None or type(value) is bytes else bytes(value)


class PrefixIndexField(_IndexField):
    """Prefix tokens (BYTEA[], PostgreSQL) of encrypted field ``of``: one token per prefix
    length in ``prefix=(min, max)``. ``filter(<of>__startswith="abc")`` searches through it.
    Give it a GIN index: ``GinIndex(fields=["<name>"])`` in the model's Meta.indexes."""

    def __init__(self, *args: Any, prefix: tuple[int, int] = (3, 8), **kwargs: Any) -> None:
        self.prefix = (int(prefix[0]), int(prefix[1]))
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        return name, path, args, kwargs

    def db_type(self, connection: Any) -> str | None:
        if connection.vendor != "postgresql":
            raise ConfigError("PrefixIndexField needs PostgreSQL (a bytea[] column with a GIN index)")
        return "bytea[]"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None:
            return None
        # The array's text form ('{"\\x03ab…",…}'): PostgreSQL parses it into bytea[] far
        # faster than the driver adapts a list of bytes element by element.
        return "{" + ",".join(f'"\\\\x{bytes(v).hex()}"' for v in value) + "}"


class _Bookkeeping:
    """A column Coffer fills in on every save: nullable, not editable in forms, and neither
    setting written into migrations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("null", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("null", None)
        kwargs.pop("editable", None)
        return name, path, args, kwargs


class KeyVersionField(_Bookkeeping, models.IntegerField):
    """The key version the row was sealed under (the re-encryption job selects rows below the
    active version). Filled in on every save."""

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        return _sealed(model_instance, self)


class RowKeyField(_Bookkeeping, models.BinaryField):
    """With ``coffer_keys = "row"`` on the model: the row's own data key, wrapped under the
    row's scope (BYTEA; docs/COLUMNS.md §8). Filled in on every save (a new row gets a fresh
    key, a saved row keeps its own). Setting it to NULL
    (``Model.objects.filter(pk=…).update(row_key=None)``) erases that row's values."""

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        v = _sealed(model_instance, self)
        setattr(model_instance, self.attname, v)
        return v

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else bytes(value)


# ---- lookups -------------------------------------------------------------------------------


class _BlindLookup(Lookup):
    prepare_rhs = False
    prefix = False

    def _index(self) -> tuple[_ModelTable, Any]:
        field = self.lhs.output_field
        mt = table_for(field.model)
        ix = mt.definition.index_for(field.column, prefix=self.prefix)
        if ix is None:
            kind = "PrefixIndexField" if self.prefix else "BlindIndexField"
            raise FieldError(
                f"{field.model._meta.label}.{field.name} is encrypted and has no {kind}: add "
                f"one with of={field.name!r} to search it with __{self.lookup_name}"
            )
        index_field = next(f for f in mt.index_fields.values() if f.column == ix.name)
        return mt, index_field

    def _col_sql(self, compiler: Any, connection: Any, index_field: Any) -> str:
        sql, _ = compiler.compile(Col(self.lhs.alias, index_field))
        return sql

    def _scopes(self, compiler: Any, mt: _ModelTable) -> list[dict[str, str]] | None:
        """For a model with a scope template: the scopes this query's filter names, from
        ``<placeholder>=value`` and ``<placeholder>__in=[...]`` lookups on the same table joined
        by AND (one search term per scope). None for a fixed scope."""
        if not mt.scope_fields:
            return None
        found: dict[str, list[Any] | None] = {col: None for col, _ in mt.scope_fields}
        alias = self.lhs.alias

        def walk(node: Any) -> None:
            if getattr(node, "negated", False):
                return
            if isinstance(node, WhereNode):
                if node.connector == AND:
                    for child in node.children:
                        walk(child)
                return
            lhs = getattr(node, "lhs", None)
            if not (isinstance(node, Lookup) and isinstance(lhs, Col) and lhs.alias == alias):
                return
            col = lhs.target.column
            if col not in found or node.lookup_name not in ("exact", "in"):
                return
            rhs = node.rhs
            if hasattr(rhs, "resolve_expression") or hasattr(rhs, "as_sql"):
                return  # an expression or a subquery: no value known here
            vals = [rhs] if node.lookup_name == "exact" else list(rhs)
            vals = [getattr(v, "pk", v) for v in vals if v is not None]
            prev = found[col]
            found[col] = vals if prev is None else [v for v in prev if v in vals]

        walk(compiler.query.where)
        missing = [attname for col, attname in mt.scope_fields if found[col] is None]
        if missing:
            field = self.lhs.output_field
            need = " and ".join(f"{m}=…" for m in missing)
            raise ConfigError(
                f"{field.model._meta.label}.{field.name} is sealed per scope ({mt.definition.scope!r}): add {need} "
                f"to the filter (or {missing[0]}__in=[…] for several); a search is computed for the scopes the "
                "filter names and finds only their rows"
            )
        cols = [col for col, _ in mt.scope_fields]
        values = [[scope_value(col, v) for v in found[col] or []] for col in cols]
        return [dict(zip(cols, combo)) for combo in itertools.product(*values)]


class BlindExact(_BlindLookup):
    """``field = value`` through the blind index, under every live key version (a
    deterministic field without a blind index: the value sealed under each version)."""

    lookup_name = "exact"

    def _deterministic(self, compiler: Any, values: list[Any]) -> tuple[str, list[Any]] | None:
        field = self.lhs.output_field
        mt = table_for(field.model)
        if field.mode != "deterministic" or mt.definition.index_for(field.column, prefix=False) is not None:
            return None
        scopes = self._scopes(compiler, mt)
        terms: list[bytes] = []
        if scopes != []:
            for v in values:
                if v is not None:
                    canon = _values.encode(field.value_type, field.normalize_value(v))
                    terms.extend(mt.table.search_deterministic(field.column, canon, scope=scopes).terms)
        sql, params = compiler.compile(self.lhs)
        return f"{sql} = ANY(%s)", [*params, terms]

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        det = self._deterministic(compiler, [self.rhs])
        if det is not None:
            return det
        mt, ixf = self._index()
        field = self.lhs.output_field
        terms = _terms(mt, ixf, field, [self.rhs], self._scopes(compiler, mt))
        return f"{self._col_sql(compiler, connection, ixf)} = ANY(%s)", [terms]


class BlindIn(BlindExact):
    """``field IN (...)`` through the blind index (or a deterministic field's terms)."""

    lookup_name = "in"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        det = self._deterministic(compiler, list(self.rhs))
        if det is not None:
            return det
        mt, ixf = self._index()
        field = self.lhs.output_field
        terms = _terms(mt, ixf, field, list(self.rhs), self._scopes(compiler, mt))
        return f"{self._col_sql(compiler, connection, ixf)} = ANY(%s)", [terms]


class BlindStartswith(_BlindLookup):
    """``field LIKE 'prefix%'`` through the prefix tokens (array overlap, GIN-indexed)."""

    lookup_name = "startswith"
    prefix = True

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        mt, ixf = self._index()
        if not isinstance(self.rhs, str):
            raise ConfigError("startswith on an encrypted field takes a str")
        scopes = self._scopes(compiler, mt)
        if scopes == []:
            return "FALSE", []
        s = mt.table.search_prefix(ixf.column, self.rhs, scope=scopes)
        return f"{self._col_sql(compiler, connection, ixf)} && %s::bytea[]", [s.terms]


class BlindIStartswith(BlindStartswith):
    """``istartswith``: allowed when the prefix index casefolds."""

    lookup_name = "istartswith"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        _, ixf = self._index()
        if not any(n in ("casefold", "lowercase") for n in ixf.normalize):
            raise FieldError(
                f"{ixf.model._meta.label}.{ixf.name} does not casefold; istartswith needs "
                "normalize=[..., 'casefold'] (or use startswith)"
            )
        return super().as_sql(compiler, connection)


def _terms(
    mt: _ModelTable, ixf: Any, field: EncryptedField, values: list[Any], scopes: list[dict[str, str]] | None
) -> list[bytes]:
    out: list[bytes] = []
    if scopes == []:  # the filter's scope values exclude each other: no row matches
        return out
    for v in values:
        if v is None:
            continue
        canon = _values.encode(field.value_type, field.normalize_value(v))
        out.extend(mt.table.search_eq(ixf.column, [canon], scope=scopes).terms)
    return out


_LOOKUPS = {
    "exact": BlindExact,
    "in": BlindIn,
    "startswith": BlindStartswith,
    "istartswith": BlindIStartswith,
}


# ---- confirmed search and bulk ------------------------------------------------------------


def search(queryset: models.QuerySet, **lookups: Any) -> list[models.Model]:
    """``queryset.filter(**lookups)``, then each candidate confirmed after decryption: a blind
    index only narrows the rows (short indexes collide on purpose), so use this where a false
    positive matters. Supports ``field=value`` and ``field__startswith=prefix``."""
    rows = list(queryset.filter(**lookups))
    out = []
    for r in rows:
        ok = True
        for key, want in lookups.items():
            name, _, op = key.partition("__")
            have = getattr(r, name)
            f = r._meta.get_field(name)
            if isinstance(f, EncryptedField):
                mt = table_for(type(r))
                ix = mt.definition.index_for(f.column, prefix=op in ("startswith", "istartswith"))
                if ix is None:
                    continue
                sc = mt.scope_of(r)
                if op in ("startswith", "istartswith"):
                    s = mt.table.search_prefix(ix.name, want, scope=sc)
                    ok &= have is not None and s.matches([_values.encode(f.value_type, have)])
                elif op in ("", "exact"):
                    s = mt.table.search_eq(ix.name, [_values.encode(f.value_type, f.normalize_value(want))], scope=sc)
                    ok &= have is not None and s.matches([_values.encode(f.value_type, have)])
        if ok:
            out.append(r)
    return out


def database_url(using: str = "default") -> str:
    """A postgres:// URL for a Django database alias (for the re-encryption job)."""
    s = connections[using].settings_dict
    if connections[using].vendor != "postgresql":
        raise ConfigError(f"database {using!r} is not PostgreSQL; the re-encryption job needs PostgreSQL")
    user = quote(s.get("USER") or "", safe="")
    pw = s.get("PASSWORD") or ""
    auth = f"{user}:{quote(pw, safe='')}@" if pw else (f"{user}@" if user else "")
    host = s.get("HOST") or "localhost"
    if host.startswith("/"):
        return f"postgres://{auth}/{quote(s['NAME'], safe='')}?host={quote(host, safe='')}"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(s['NAME'], safe='')}"


def reencrypt(model: type[models.Model], *, using: str = "default", batch_size: int = 1000, workers: int = 1,
              max_rows: int | None = None) -> dict[str, Any]:
    """Runs the re-encryption job (``coffer reencrypt``) on a model's table: every row below
    the active key version is sealed again, with its indexes, while the application runs."""
    mt = table_for(model)
    return mt.table.reencrypt(database_url(using), batch_size=batch_size, workers=workers, max_rows=max_rows)
