"""Schema version 7: the last progress value a running task reported. Frozen.

Self-contained (one nullable column on the queue table and one on the finished-tasks table of
version 4), so that it can be renumbered when branches merge.

`progress` is `{"value": <the task's JSON>, "reported_at": <timestamptz>, "attempt": <int>}`,
written by the worker that holds the task's lease (`current_task().report(...)`, at most once
every few seconds per task), and carried to the finished-tasks table when a kept task leaves
the queue. Nullable and without a default, so adding it rewrites no row (a catalog change
only), and a task that never reports never writes it. No index covers it: a progress write is
a HOT update, like a claim's.
"""

from __future__ import annotations

UP = (
    """
-- The last progress value the running (or last) attempt reported; NULL when none did.
ALTER TABLE sqlatasks_tasks ADD COLUMN progress jsonb
""",
    """
-- A kept task's last progress, as it left the queue.
ALTER TABLE sqlatasks_finished ADD COLUMN progress jsonb
""",
)

DOWN = (
    "ALTER TABLE sqlatasks_finished DROP COLUMN progress",
    "ALTER TABLE sqlatasks_tasks DROP COLUMN progress",
)
