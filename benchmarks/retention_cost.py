"""`retention_cost`: no-op throughput of the real runner with retention off and on, in one run.

The same backlog of no-op tasks (`benchmarks.noop`, which returns None) is drained by
`python -m sqlatasks.runner --burst --workers 1 --concurrency 100`, in two variants that take
turns round by round (off, on, on, off, …):

- retention off (the default, `--keep 0`): each ack is the plain `DELETE` of a batch;
- retention on (`--keep 60`): each ack moves its batch to `sqlatasks_finished` in one
  statement (`DELETE … RETURNING` feeding an `INSERT`, whose statement trigger NOTIFYs the
  ids for `wait_for`), and the scheduler of worker 0 prunes nothing yet (nothing is 60 s old).

The rate counts from the worker's start to the runner's exit, as in `process`. The issue's
target: retention on at ≥ 0.7 of off. Both tables are emptied before every round.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks import database, measure, process
from sqlatasks.models import FINISHED_TABLE_NAME

TASKS, QUICK_TASKS = 20_000, 2_000
ROUNDS, QUICK_ROUNDS = 3, 1
WORKERS, CONCURRENCY = 1, 100
KEEP = 60
OFF = f"runner --burst {WORKERS}x{CONCURRENCY}, retention off"
ON = f"runner --burst {WORKERS}x{CONCURRENCY}, --keep {KEEP}"


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks = QUICK_TASKS if quick else TASKS
    engine = create_async_engine(url)
    seconds: dict[str, list[float]] = {OFF: [], ON: []}
    kept: list[int] = []
    try:
        for round_number in range(QUICK_ROUNDS if quick else ROUNDS):
            order = [OFF, ON] if round_number % 2 == 0 else [ON, OFF]
            for name in order:
                await _empty(engine)
                await process.fill(engine, tasks)
                keep = ("--keep", str(KEEP)) if name == ON else ()
                drained, _, _ = await process.runner_drain(url, WORKERS, CONCURRENCY, *keep)
                if left := await process.queued(engine):
                    raise SystemExit(f"benchmarks: retention_cost left {left} tasks in {name!r}")
                seconds[name].append(drained)
                if name == ON:
                    kept.append(await _kept(engine))
            print(f"  round {round_number + 1}: done", flush=True)
    finally:
        await _empty(engine)
        await engine.dispose()
    if any(count != tasks for count in kept):
        raise SystemExit(f"benchmarks: retention_cost kept {kept} tasks, not {tasks} per round")
    notes: dict[str, float | str] = {"unprocessed tasks": 0.0}
    return [
        measure.Row(OFF, tasks, tuple(seconds[OFF]), notes=notes),
        measure.Row(
            ON,
            tasks,
            tuple(seconds[ON]),
            baselines=(OFF,),
            notes={**notes, "kept tasks per round": float(tasks), "target ratio": ">= 0.7"},
        ),
    ]


async def _empty(engine: AsyncEngine) -> None:
    await database.truncate(engine)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {FINISHED_TABLE_NAME}"))


async def _kept(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = text(f"SELECT count(*) FROM {FINISHED_TABLE_NAME} WHERE state = 'completed'")
        return int((await conn.execute(query)).scalar_one())
