"""Schema version 9: the throughput rollup — outcomes per minute, queue and worker. Frozen.

Self-contained (one new table, nothing of another version), so that it can be renumbered when
branches merge.

Each worker counts its tasks' outcomes in memory and adds them here every few seconds, one
statement per flush, to rows of its own (the worker is in the key): two workers never write
the same row, so the upserts never wait on each other. The dashboard's chart reads the last
hour through the primary key (`minute` first); the scheduler deletes rows older than two hours.
Logged, not UNLOGGED: an unlogged table cannot be read on a standby, where a dashboard may run.
"""

from __future__ import annotations

UP = (
    """
CREATE TABLE sqlatasks_throughput (
    minute     timestamptz NOT NULL,        -- the minute the attempts ended in (worker's clock)
    queue      text        NOT NULL,
    worker     text        NOT NULL,        -- the worker id (host:pid:index:random)
    completed  integer     NOT NULL DEFAULT 0,
    failed     integer     NOT NULL DEFAULT 0,  -- parked: attempts left none
    retried    integer     NOT NULL DEFAULT 0,  -- failed attempts due again later
    PRIMARY KEY (minute, queue, worker)
)
""",
)

DOWN = ("DROP TABLE sqlatasks_throughput",)
