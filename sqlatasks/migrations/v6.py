"""Schema version 6: an index that finds parked tasks, newest failure first. Frozen.

Self-contained (one index on the queue table's own columns), so that it can be renumbered when
branches merge.

Partial on `failed_at IS NOT NULL`: it holds parked rows only, so it is as small as the set of
parked tasks, and it costs the claim nothing — a claim's UPDATE changes no `failed_at` (it
stays a HOT update), and parking or retrying a task already changes `failed_at`, which the
claim index's predicate reads. Its order is the one `failed_tasks` and the dashboard's parked
page read: `ORDER BY failed_at DESC, id DESC`, so both stop after a page.
"""

from __future__ import annotations

UP = (
    """
-- Parked tasks, newest failure first: failed_tasks() and the dashboard read it in this order.
CREATE INDEX sqlatasks_tasks_parked_idx
    ON sqlatasks_tasks (failed_at DESC, id DESC)
    WHERE failed_at IS NOT NULL
""",
)

DOWN = ("DROP INDEX sqlatasks_tasks_parked_idx",)
