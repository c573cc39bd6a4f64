"""Canonical encodings of typed values (docs/FORMAT.md, table 3).

Every language Coffer supports seals the same bytes for the same value, and the type is bound
into the ciphertext, so a value sealed as ``int`` cannot be opened as ``text``:

======== =============================== =================================================
type     Python                          sealed bytes
======== =============================== =================================================
text     str                             UTF-8
bytes    bytes / bytearray / memoryview  as is
int      int                             i64 big-endian
bool     bool                            ``00`` / ``01``
date     datetime.date                   days since 1970-01-01, i32 big-endian
timestamp datetime.datetime (aware)      microseconds since the epoch (UTC), i64 big-endian
json     anything json.dumps accepts     RFC 8785 (JCS) canonical JSON
uuid     uuid.UUID                       16 bytes
======== =============================== =================================================
"""

from __future__ import annotations

import datetime as _dt
import json as _json
import uuid as _uuid
from typing import Any

from coffer._native import ConfigError, canonical_json, canonical_json_of

VALUE_TYPES = ("text", "bytes", "int", "bool", "date", "timestamp", "json", "uuid")

_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_US = _dt.timedelta(microseconds=1)
_I64 = (-(1 << 63), (1 << 63) - 1)


def _bad(value_type: str, value: Any, want: str) -> ConfigError:
    # The message names the type of the value, never the value itself.
    return ConfigError(f"a {value_type} value must be {want}; got {type(value).__name__}")


def encode(value_type: str, value: Any) -> bytes:
    """The canonical bytes of ``value`` as a ``value_type`` value."""
    if value_type == "text":
        if not isinstance(value, str):
            raise _bad(value_type, value, "str")
        return value.encode("utf-8")
    if value_type == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise _bad(value_type, value, "bytes")
        return bytes(value)
    if value_type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(value_type, value, "int")
        if not _I64[0] <= value <= _I64[1]:
            raise ConfigError("an int value must fit in 64 bits (signed)")
        return value.to_bytes(8, "big", signed=True)
    if value_type == "bool":
        if not isinstance(value, bool):
            raise _bad(value_type, value, "bool")
        return b"\x01" if value else b"\x00"
    if value_type == "date":
        if isinstance(value, _dt.datetime) or not isinstance(value, _dt.date):
            raise _bad(value_type, value, "datetime.date")
        return (value.toordinal() - _EPOCH_ORDINAL).to_bytes(4, "big", signed=True)
    if value_type == "timestamp":
        if not isinstance(value, _dt.datetime):
            raise _bad(value_type, value, "datetime.datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigError("a timestamp value must be timezone-aware (e.g. tzinfo=UTC)")
        return ((value - _EPOCH) // _US).to_bytes(8, "big", signed=True)
    if value_type == "json":
        fast = canonical_json_of(value)  # the same bytes, without json.dumps, for plain data
        if fast is not None:
            return fast
        try:
            text = _json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"a json value must be JSON-serializable: {e}") from None
        return canonical_json(text)
    if value_type == "uuid":
        if not isinstance(value, _uuid.UUID):
            raise _bad(value_type, value, "uuid.UUID")
        return value.bytes
    raise ConfigError(f"unknown value type {value_type!r}; expected one of {', '.join(VALUE_TYPES)}")


def decode(value_type: str, data: bytes) -> Any:
    """The value whose canonical bytes are ``data``."""
    try:
        if value_type == "text":
            return data.decode("utf-8")
        if value_type == "bytes":
            return bytes(data)
        if value_type == "int":
            _exact(data, 8)
            return int.from_bytes(data, "big", signed=True)
        if value_type == "bool":
            if data not in (b"\x00", b"\x01"):
                raise ValueError("bool")
            return data == b"\x01"
        if value_type == "date":
            _exact(data, 4)
            return _dt.date.fromordinal(int.from_bytes(data, "big", signed=True) + _EPOCH_ORDINAL)
        if value_type == "timestamp":
            _exact(data, 8)
            return _EPOCH + int.from_bytes(data, "big", signed=True) * _US
        if value_type == "json":
            return _json.loads(data)
        if value_type == "uuid":
            return _uuid.UUID(bytes=bytes(data))
    except (ValueError, OverflowError):
        raise ConfigError(f"the decrypted bytes are not a valid {value_type} value") from None
    raise ConfigError(f"unknown value type {value_type!r}; expected one of {', '.join(VALUE_TYPES)}")


def _exact(data: bytes, n: int) -> None:
    if len(data) != n:
        raise ValueError("length")
