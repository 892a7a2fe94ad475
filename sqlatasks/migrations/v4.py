"""Schema version 4: reserved for a change being built on another branch. Frozen.

A placeholder with no statements, so that version 5 can be applied in order; the lead replaces
it (or renumbers version 5) at merge.
"""

from __future__ import annotations

UP: tuple[str, ...] = ()
DOWN: tuple[str, ...] = ()
