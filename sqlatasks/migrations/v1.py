"""Schema version 1: the queue table, its claim index, and the wake-up trigger. Frozen."""

from __future__ import annotations

UP = (
    """
CREATE TABLE sqlatasks_tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_name     text NOT NULL,
    payload       jsonb NOT NULL,
    queue         text NOT NULL DEFAULT 'default',
    priority      smallint NOT NULL DEFAULT 0,
    scheduled_at  timestamptz NOT NULL DEFAULT now(),   -- due time, by the database clock
    attempts      integer NOT NULL DEFAULT 0,           -- claims so far, the running one included
    max_attempts  integer,                              -- NULL: retry for ever
    locked_until  timestamptz,                          -- lease end; NULL when not running
    locked_by     text,                                 -- the worker holding the lease
    lease_token   uuid,                                 -- fresh per claim; later writes name it
    last_error    text,
    failed_at     timestamptz,                          -- set when parked; never claimed again
    created_at    timestamptz NOT NULL DEFAULT now()
    -- No foreign keys: a queue row must never block, or be blocked by, application rows.
) WITH (
    -- Leave room on each page so the claim's UPDATE (which touches no indexed column) can
    -- put the new row version on the same page: a HOT update, with no index write.
    fillfactor = 70,
    -- The table is small and churns constantly; a scale factor of a small table is a tiny
    -- number, so trigger vacuum and analyze on absolute counts of changed rows instead.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    -- Never throttle vacuum here: dead row versions at the head of the claim index are what
    -- every claim scans past.
    autovacuum_vacuum_cost_delay = 0
)
""",
    """
-- The one index the claim needs: its ORDER BY, over live (not parked) rows only, so a claim
-- reads due rows in order and stops after LIMIT.
CREATE INDEX sqlatasks_tasks_claim_idx
    ON sqlatasks_tasks (priority DESC, scheduled_at, id)
    WHERE failed_at IS NULL
""",
    """
-- Wake idle workers when tasks are inserted: one NOTIFY per statement (not per row), and
-- PostgreSQL folds identical notifications within a transaction and delivers them on commit.
CREATE FUNCTION sqlatasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqlatasks', '');
    RETURN NULL;
END;
$$
""",
    """
CREATE TRIGGER sqlatasks_tasks_notify
    AFTER INSERT ON sqlatasks_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION sqlatasks_notify()
""",
)
# One statement each: asyncpg prepares every statement, and a prepared statement holds one.

DOWN = (
    "DROP TABLE sqlatasks_tasks",
    "DROP FUNCTION sqlatasks_notify()",
)
