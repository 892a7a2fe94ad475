"""PLACEHOLDER for schema version 8, written by branch `obs` (not this branch's to write).

Empty so that this branch's chain (v9) applies on its own; at merge, replace this file with
branch obs's v8.py.
"""

from __future__ import annotations

UP: tuple[str, ...] = ()
DOWN: tuple[str, ...] = ()
