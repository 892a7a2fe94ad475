"""Every statement sqlatasks issues, one function each, grouped by who calls it.

    enqueue    the application (producer role): insert tasks in its own transaction
    claim      workers: lease due tasks, give back a claim whose answer was lost
    outcomes   workers: ack, fail, release, snooze; finish a session task in its transaction;
               move kept tasks to the finished table, prune it
    throughput workers: add outcome counts per minute to the rollup, prune it (schema v9)
    periodic   workers: fire the slots of periodic schedules
    operator   people and scripts: stats, parked tasks, retry, delete, cancel
    status     applications and people: one task's state and result, kept counts
    server     any role: name a connection, check the schema, read the database clock
    dashboard  the web dashboard's reads: capped, through indexes (SELECT and pg_stat_activity)

The grouping follows the database privileges (docs/reliability.md, tests/test_roles.py): a
producer needs INSERT, a worker SELECT/UPDATE/DELETE on the queue table, the periodic table and
the throughput rollup.

Lease rules every write about a claimed task follows: a claim writes a fresh `lease_token`, and
every later write (ack, fail, release, snooze, finish) names that token, so a late write from a
worker that lost its lease changes nothing. All times are the database's `now()`.

No module outside this folder builds SQL; a ruff rule (TID251) and tests/test_layout.py keep
it so.
"""
