"""A faster text dumper for PostgreSQL ``bytea[]`` parameters (psycopg 3).

Django 5.2 inserts ``bulk_create`` batches on PostgreSQL as ``UNNEST(%s::bytea[], …)``, one
array per column, and psycopg renders each array in text form element by element: it escapes
every element through a regular expression: 37 ms per 10 000 80-byte ciphertexts here, which
made the encrypted columns cost more than everything else in a bulk insert. The dumper below
writes the same array text (``{"\\\\x…","\\\\x…",NULL}``) with ``bytes.hex()``: 4 ms for the same
list. It only takes flat lists whose items are ``bytes`` or ``None``; anything else (nested
lists, ``bytearray``, other types) goes through psycopg's own dumper unchanged.

The app registers it on each new PostgreSQL connection (``COFFER = {"FAST_BYTEA_ARRAYS":
False}`` turns it off). It changes how the parameter is written, never what it is: a test
checks that both dumpers produce the same bytes.
"""

from __future__ import annotations

from typing import Any

from psycopg import pq
from psycopg.types.array import ListDumper

from coffer._table import Sealed

BYTEA_OID = 17


class CofferListDumper(ListDumper):
    """psycopg's text list dumper, which hands ``bytea`` arrays to :class:`ByteaListDumper`."""

    def upgrade(self, obj: list[Any], format: Any) -> Any:
        dumper = super().upgrade(obj, format)
        sub = getattr(dumper, "sub_dumper", None)
        if dumper is not self and sub is not None and sub.oid == BYTEA_OID and dumper.format == pq.Format.TEXT:
            fast = ByteaListDumper(self.cls, self._tx)
            fast.sub_dumper = sub
            fast.oid = dumper.oid
            fast.delimiter = dumper.delimiter
            return fast
        return dumper


class ByteaListDumper(CofferListDumper):
    """A flat list of ``bytes``/``None`` as ``bytea[]`` text, without per-element regexes."""

    def dump(self, obj: list[Any]) -> bytes | None:
        parts = []
        append = parts.append
        for item in obj:
            if type(item) is bytes or type(item) is Sealed:
                append('"\\\\x' + item.hex() + '"')
            elif item is None:
                append("NULL")
            else:
                return super().dump(obj)
        return ("{" + self.delimiter.decode().join(parts) + "}").encode()


def register(connection: Any) -> None:
    """Registers the dumper on one psycopg connection."""
    connection.adapters.register_dumper(list, CofferListDumper)
