"""A tiny TOML writer for the column schemas the tests hand to the CLI (tomllib only reads)."""

from __future__ import annotations

import json
from typing import Any


def _v(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_v(x) for x in v) + "]"
    raise TypeError(type(v))


def schema_toml(*specs: dict[str, Any]) -> str:
    """coffer-columns.toml text for table specs (coffer._table.TableDef.spec())."""
    out = []
    for spec in specs:
        out.append("[[table]]")
        for k, v in spec.items():
            if k not in ("column", "index"):
                out.append(f"{k} = {_v(v)}")
        for c in spec.get("column", []):
            out.append("[[table.column]]")
            out.extend(f"{k} = {_v(v)}" for k, v in c.items())
        for i in spec.get("index", []):
            out.append("[[table.index]]")
            out.extend(f"{k} = {_v(v)}" for k, v in i.items())
    return "\n".join(out) + "\n"
