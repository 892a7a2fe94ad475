"""Schema version 4: the table of finished tasks that were asked to be kept. Frozen.

The queue table is unchanged: a task that keeps nothing costs what it cost before. A kept task
is deleted from the queue and inserted here in one statement (sqlatasks.sql.outcomes); no claim
ever reads this table, and the scheduler prunes it in bounded batches past `keep_until`.
"""

from __future__ import annotations

UP = (
    """
CREATE TABLE sqlatasks_finished (
    id            bigint PRIMARY KEY,       -- the task's id in sqlatasks_tasks
    task_name     text NOT NULL,
    queue         text NOT NULL,
    state         text NOT NULL,            -- 'completed' or 'cancelled'
    payload       jsonb NOT NULL,
    result        jsonb,                    -- what the task returned, as JSON; NULL for None
    attempts      integer NOT NULL,
    max_attempts  integer,
    last_error    text,                     -- of an earlier attempt, if one failed
    unique_key    text,
    worker        text,                     -- the worker that ran the last attempt
    created_at    timestamptz NOT NULL,     -- enqueued
    started_at    timestamptz,              -- the last attempt's start
    finished_at   timestamptz NOT NULL DEFAULT now(),
    keep_until    timestamptz NOT NULL,     -- pruned after this
    CONSTRAINT sqlatasks_finished_state_check CHECK (state IN ('completed', 'cancelled'))
    -- No foreign keys, like the queue table.
) WITH (
    -- Insert-only until pruned: vacuum on absolute counts, as for the queue table.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000
)
""",
    """
-- The pruning scan: the oldest expiries first, a bounded batch at a time.
CREATE INDEX sqlatasks_finished_keep_until_idx ON sqlatasks_finished (keep_until)
""",
    """
-- get_task_by_key: the newest task that held a key.
CREATE INDEX sqlatasks_finished_unique_key_idx
    ON sqlatasks_finished (unique_key, id)
    WHERE unique_key IS NOT NULL
""",
    """
-- Wake wait_for(): the ids of the tasks just kept, once per statement, in payloads of at most
-- 300 ids (a NOTIFY payload holds under 8000 bytes); delivered when the insert commits.
CREATE FUNCTION sqlatasks_finished_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqlatasks_finished', string_agg(id::text, ','))
    FROM (SELECT id, (row_number() OVER ()) / 300 AS chunk FROM finished) AS numbered
    GROUP BY chunk;
    RETURN NULL;
END;
$$
""",
    """
CREATE TRIGGER sqlatasks_finished_notify
    AFTER INSERT ON sqlatasks_finished
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION sqlatasks_finished_notify()
""",
)
# One statement each: asyncpg prepares every statement, and a prepared statement holds one.

DOWN = (
    "DROP TABLE sqlatasks_finished",
    "DROP FUNCTION sqlatasks_finished_notify()",
)
