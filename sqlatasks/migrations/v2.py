"""Schema version 2: unique keys. Frozen.

A row with a `unique_key` is only added while no live row (queued, scheduled or running: not
parked) holds the same key. The check is a trigger, not an `ON CONFLICT` clause, because
`session.add(enqueue(...))` goes through the ORM's plain INSERT; and it never raises, because a
unique violation would abort the caller's whole transaction. A duplicate is inserted parked,
marked with `duplicate_of`, and deleted again at once unless its caller asked for a report.
"""

from __future__ import annotations

UP = (
    """
ALTER TABLE sqlatasks_tasks
    ADD COLUMN unique_key   text,           -- at most one live row per key
    ADD COLUMN on_duplicate text,           -- 'skip' (NULL too) or 'report'; read at insert
    ADD COLUMN duplicate_of bigint,         -- set by the insert trigger: the live holder's id
    ADD CONSTRAINT sqlatasks_tasks_on_duplicate_check
        CHECK (on_duplicate IN ('skip', 'report'))
""",
    """
-- The safety net under the trigger, and the index its lookup uses. Parked rows (failed_at set;
-- duplicates are inserted parked) hold no key.
CREATE UNIQUE INDEX sqlatasks_tasks_unique_key_idx
    ON sqlatasks_tasks (unique_key)
    WHERE unique_key IS NOT NULL AND failed_at IS NULL
""",
    """
-- SECURITY DEFINER (the table owner's rights, with a fixed search_path and the table named by
-- the trigger's own schema): a producer role needs INSERT only, not SELECT on keys or DELETE.
CREATE FUNCTION sqlatasks_unique_check() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Serialise inserts of the same key until the first inserter commits or rolls back. Under
    -- READ COMMITTED the lookup below then takes a fresh snapshot and sees that commit.
    PERFORM pg_advisory_xact_lock(TG_RELID::integer, hashtext(NEW.unique_key));
    EXECUTE format(
        'SELECT id FROM %I.%I WHERE unique_key = $1 AND failed_at IS NULL',
        TG_TABLE_SCHEMA, TG_TABLE_NAME
    ) INTO NEW.duplicate_of USING NEW.unique_key;
    IF NEW.duplicate_of IS NOT NULL THEN
        -- Parked, so it neither holds the key nor is ever claimed.
        NEW.failed_at := now();
        NEW.last_error := 'duplicate of task ' || NEW.duplicate_of;
    END IF;
    RETURN NEW;
END;
$$
""",
    """
-- WHEN: rows without a key (and COPY batches of them) never call the function.
CREATE TRIGGER sqlatasks_tasks_unique_check
    BEFORE INSERT ON sqlatasks_tasks
    FOR EACH ROW WHEN (NEW.unique_key IS NOT NULL)
    EXECUTE FUNCTION sqlatasks_unique_check()
""",
    """
CREATE FUNCTION sqlatasks_unique_skip() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DELETE FROM %I.%I WHERE id = $1', TG_TABLE_SCHEMA, TG_TABLE_NAME)
    USING NEW.id;
    RETURN NULL;
END;
$$
""",
    """
-- Delete a skipped duplicate after the insert, not instead of it (a BEFORE trigger returning
-- NULL): the INSERT ... RETURNING still answers, so the ORM gets its id and duplicate_of.
CREATE TRIGGER sqlatasks_tasks_unique_skip
    AFTER INSERT ON sqlatasks_tasks
    FOR EACH ROW WHEN (NEW.duplicate_of IS NOT NULL AND NEW.on_duplicate IS DISTINCT FROM 'report')
    EXECUTE FUNCTION sqlatasks_unique_skip()
""",
)
# One statement each: asyncpg prepares every statement, and a prepared statement holds one.

DOWN = (
    "DROP TRIGGER sqlatasks_tasks_unique_skip ON sqlatasks_tasks",
    "DROP TRIGGER sqlatasks_tasks_unique_check ON sqlatasks_tasks",
    "DROP FUNCTION sqlatasks_unique_skip()",
    "DROP FUNCTION sqlatasks_unique_check()",
    "DROP INDEX sqlatasks_tasks_unique_key_idx",
    """
ALTER TABLE sqlatasks_tasks
    DROP COLUMN unique_key,
    DROP COLUMN on_duplicate,
    DROP COLUMN duplicate_of
""",
)
