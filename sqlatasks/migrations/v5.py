"""Schema version 5: flow control — concurrency keys, and queue settings every runner obeys.
Frozen.

Self-contained (it uses no object of another version but the queue table's own columns), so
that it can be renumbered when branches merge.

A row with a `concurrency_key` is claimed only while fewer than its `concurrency_limit` rows
with that key hold a valid lease. The check is `sqlatasks_key_admits`, called by the claim for
keyed rows only: it takes a per-key advisory lock for the rest of the claim's transaction (so
two claimers never both see the key free), then counts the key's running rows with a fresh
snapshot (a VOLATILE PL/pgSQL function's statements each take their own, so the count sees a
claim that committed after the calling statement began).

A row of `sqlatasks_queues` pauses a queue, caps its running tasks across every runner, or
limits its starts per second; `sqlatasks_queue_room` is the check the claim of such a queue
asks, under the settings row's lock.
"""

from __future__ import annotations

UP = (
    """
-- At most concurrency_limit tasks with one concurrency_key run at once; the limit is set with
-- the key (the task's, else 1), so a claimer needs no task code to obey it.
ALTER TABLE sqlatasks_tasks
    ADD COLUMN concurrency_key   text,
    ADD COLUMN concurrency_limit integer
""",
    """
-- The running count per key reads only the key's own rows. No lease column in the index: the
-- claim's UPDATE stays a HOT update, touching no indexed column.
CREATE INDEX sqlatasks_tasks_concurrency_key_idx
    ON sqlatasks_tasks (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND failed_at IS NULL
""",
    """
CREATE FUNCTION sqlatasks_key_admits(key text, key_limit integer, claim uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- Keys admitted (h) and refused (xh) so far by the calling statement, after its start
    -- time: its own UPDATE is not visible to the count below, so its admissions count here.
    seen text[] := string_to_array(current_setting('sqlatasks.claim_keys', true), ',');
    stamp text := statement_timestamp()::text;
    h text := hashtext(key)::text;
    taken integer;
    running integer;
BEGIN
    IF seen IS NULL OR seen[1] IS DISTINCT FROM stamp THEN
        seen := ARRAY[stamp];  -- a new claim statement (a later one of the same transaction
    END IF;                    -- sees the earlier one's leases in the count)
    IF ('x' || h) = ANY(seen) THEN
        RETURN false;  -- refused earlier in this claim: the key's later rows are too
    END IF;
    -- Another claimer is deciding about this key right now: skip it, never wait.
    IF NOT pg_try_advisory_xact_lock(1517964101, hashtext(key)) THEN
        PERFORM set_config('sqlatasks.claim_keys', array_to_string(seen || ('x' || h), ','), true);
        RETURN false;
    END IF;
    taken := coalesce(cardinality(array_positions(seen, h)), 0);
    -- Not the calling claim's own rows (its UPDATE may have reached some already, and the
    -- fresh snapshot would see them): those are `taken`.
    SELECT count(*) INTO running FROM sqlatasks_tasks
    WHERE concurrency_key = key AND failed_at IS NULL AND locked_until >= now()
      AND lease_token IS DISTINCT FROM claim;
    IF running + taken >= coalesce(key_limit, 1) THEN
        PERFORM set_config('sqlatasks.claim_keys', array_to_string(seen || ('x' || h), ','), true);
        RETURN false;
    END IF;
    PERFORM set_config('sqlatasks.claim_keys', array_to_string(seen || h, ','), true);
    RETURN true;
END;
$$
""",
    """
CREATE TABLE sqlatasks_queues (
    name         text PRIMARY KEY,
    paused       boolean NOT NULL DEFAULT false,  -- nothing of the queue starts
    max_running  integer,                         -- running at once, across every runner
    per_second   double precision,                -- starts per second, across every runner
    next_start   timestamptz,                     -- the rate limit's next free start
    CONSTRAINT sqlatasks_queues_max_running_check CHECK (max_running >= 0),
    CONSTRAINT sqlatasks_queues_per_second_check CHECK (per_second > 0)
)
""",
    """
CREATE FUNCTION sqlatasks_queue_room(q text, wanted integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s sqlatasks_queues%ROWTYPE;
    room integer := wanted;
    running integer;
BEGIN
    -- The row lock, held to the end of the claim, serialises the claimers of one queue; a
    -- claimer that finds it taken starts nothing of this queue this round, and never waits.
    SELECT * INTO s FROM sqlatasks_queues WHERE name = q FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM 1 FROM sqlatasks_queues WHERE name = q;
        RETURN CASE WHEN FOUND THEN 0 ELSE wanted END;  -- taken, or no settings at all
    END IF;
    IF s.paused THEN
        RETURN 0;
    END IF;
    IF s.max_running IS NOT NULL THEN
        -- A fresh snapshot (see above): it sees every claim committed before the lock.
        SELECT count(*) INTO running FROM sqlatasks_tasks
        WHERE queue = q AND failed_at IS NULL AND locked_until >= now();
        room := least(room, s.max_running - running);
    END IF;
    IF s.per_second IS NOT NULL AND room > 0 THEN
        IF s.next_start > now() THEN
            RETURN 0;
        END IF;
        -- One start per 1/per_second: a claim that comes up to half an interval late keeps
        -- the rate (the slot is counted from when it was due), a later one starts afresh.
        room := 1;
        UPDATE sqlatasks_queues
        SET next_start = greatest(s.next_start, now() - make_interval(secs => 0.5 / s.per_second))
                         + make_interval(secs => 1 / s.per_second)
        WHERE name = q;
    END IF;
    RETURN greatest(room, 0);
END;
$$
""",
)
# One statement each: asyncpg prepares every statement, and a prepared statement holds one.

DOWN = (
    "DROP FUNCTION sqlatasks_queue_room(text, integer)",
    "DROP TABLE sqlatasks_queues",
    "DROP FUNCTION sqlatasks_key_admits(text, integer, uuid)",
    "DROP INDEX sqlatasks_tasks_concurrency_key_idx",
    """
ALTER TABLE sqlatasks_tasks
    DROP COLUMN concurrency_key,
    DROP COLUMN concurrency_limit
""",
)
