"""Schema version 3: the table that makes each periodic slot fire once. Frozen."""

from __future__ import annotations

UP = (
    """
CREATE TABLE sqlatasks_periodic (
    name       text PRIMARY KEY,           -- the schedule's name (the task's, by default)
    cron       text NOT NULL,              -- the expression last_slot belongs to
    last_slot  timestamptz NOT NULL        -- the latest slot fired (or skipped, when first seen)
    -- One row per schedule, updated once per slot: firing a slot moves last_slot up and
    -- inserts the task in one statement, and the row lock lets one runner win each slot.
)
""",
)
# One statement each: asyncpg prepares every statement, and a prepared statement holds one.

DOWN = ("DROP TABLE sqlatasks_periodic",)
