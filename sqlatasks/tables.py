"""How the operator commands print: tables and field lists for people, JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any


class Record(dict[str, Any]):
    """One item, printed as `field  value` lines rather than a one-row table."""


def show(result: Any, *, as_json: bool) -> None:
    """Print a command's result: JSON (timestamps as ISO 8601) with `as_json`, else a table
    of rows, `field  value` lines for one Record, or text as it is."""
    if isinstance(result, list):
        rows = [r if isinstance(r, dict) else dataclasses.asdict(r) for r in result]
    else:
        rows = [result]
    if as_json:
        print(json.dumps(rows if isinstance(result, list) else result, default=_json, indent=2))
        return
    if isinstance(result, str):
        print(result, end="")
        return
    if isinstance(result, Record):
        width = max(map(len, result))
        for field, value in result.items():
            shown = value if isinstance(value, str) else _cell(value)  # errors: whole
            print(f"{field.ljust(width)}  {shown}")
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _json(value: Any) -> Any:
    """What json.dumps cannot encode itself: timestamps, as ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value).partition("\n")[0][:80]  # errors: their first line
