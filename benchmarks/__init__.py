"""Benchmarks: what sqlatasks costs, as a ratio to a baseline measured in the same run.

    python -m benchmarks [--quick] [--durable] [scenario ...]   # all scenarios unless named
    nox -s bench -- --quick

The database is SQLATASKS_BENCH_DATABASE_URL, or a throwaway PostgreSQL (pgserver). Its schema
is made the real way, by `alembic upgrade head`, plus the example application's tables; its
tables are emptied between rounds, and unless --durable it is set to `synchronous_commit = off`
(see `database.prepare`). Each scenario prints a table and writes
benchmarks/results/<scenario>.json.

A scenario is a module with `async def run(url: str, quick: bool) -> list[measure.Row]`,
listed in `SCENARIOS` in `benchmarks/__main__.py`. It measures its variants with
`measure.measure()` (warm-up, then interleaved rounds, tables emptied before each) and names
each row's baselines; the ratios are worked out by `report`.
"""
