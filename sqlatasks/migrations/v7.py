"""PLACEHOLDER for schema version 7, written by branch `status` (not this branch's to write).

Empty so that this branch's chain (v9) applies on its own; at merge, replace this file with
branch status's v7.py.
"""

from __future__ import annotations

UP: tuple[str, ...] = ()
DOWN: tuple[str, ...] = ()
