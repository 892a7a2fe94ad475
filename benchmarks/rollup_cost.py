"""`rollup_cost`: what the throughput rollup (schema v9, the dashboard's chart) costs the
runner, in one run.

The same backlog of no-op tasks is drained by `python -m sqlatasks.runner --burst` at 2 workers
x 50, in three variants that take turns round by round:

- off: `--throughput-interval 0`, no counting, no flush (the baseline);
- default: `--throughput-interval 10`: a dictionary increment per task, one upsert per worker
  every 10 s and one at exit;
- every 0.1 s: a hundred times the default's flushes, to make the flush's own cost visible.

And, in this process, what counting one outcome costs (`Tally.count`, a million times): the
only part of the rollup a task pays for, against which the drain's noise can be judged.

Each row notes the workers' CPU per task (their own cost, less moved by other processes on a
shared machine than the wall time) and the completions the rollup holds after the drain: every
task, since each worker flushes once more at exit. Statements: one per worker per interval and
one at exit, by construction (sqlatasks/completer.py).
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks import database, measure, process
from sqlatasks import throughput
from sqlatasks.models import THROUGHPUT_TABLE_NAME
from sqlatasks.outcomes import Completed
from sqlatasks.rows import ClaimedTask

TASKS, QUICK_TASKS = 30_000, 3_000
COUNTS = 1_000_000
COUNTED = "Tally.count, in process (what each task pays)"
ROUNDS, QUICK_ROUNDS = 5, 1
WORKERS, CONCURRENCY = 2, 50
VARIANTS = {
    "runner --burst 2x50, rollup off": "0",
    "runner --burst 2x50, rollup every 10 s (default)": "10",
    "runner --burst 2x50, rollup every 0.1 s": "0.1",
}


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks = QUICK_TASKS if quick else TASKS
    engine = create_async_engine(url)
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    counted: dict[str, int] = {}
    try:
        for _ in range(QUICK_ROUNDS if quick else ROUNDS):
            for name, interval in VARIANTS.items():
                await _reset(engine)
                await process.fill(engine, tasks)
                took, _, worker_cpu = await process.runner_drain(
                    url, WORKERS, CONCURRENCY, "--throughput-interval", interval
                )
                if left := await process.queued(engine):
                    raise SystemExit(f"benchmarks: rollup_cost left {left} tasks in {name!r}")
                seconds[name].append(took)
                cpu[name].append(worker_cpu)
                counted[name] = await _completed(engine)
    finally:
        await _reset(engine)
        await engine.dispose()
    baseline = next(iter(VARIANTS))
    for name, interval in VARIANTS.items():
        expected = tasks if interval != "0" else 0
        if counted[name] != expected:
            raise SystemExit(f"benchmarks: {name!r} counted {counted[name]} of {expected}")
    rows = [
        measure.Row(
            name,
            tasks,
            tuple(seconds[name]),
            baselines=() if name == baseline else (baseline,),
            notes={
                "worker CPU µs per task": round(min(cpu[name]) / tasks * 1e6, 1),
                "tasks counted in the rollup": float(counted[name]),
            },
        )
        for name in VARIANTS
    ]
    return [_count_cost(QUICK_ROUNDS if quick else ROUNDS), *rows]


def _count_cost(rounds: int) -> measure.Row:
    """The per-task side of the rollup alone: counting one outcome, a million times a round."""
    tally = throughput.Tally("bench", interval=10)
    outcome = Completed(ClaimedTask(1, "bench", "default", "{}", 1, None, uuid.uuid4()))
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(COUNTS):
            tally.count(outcome)
        seconds.append(time.perf_counter() - start)
    return measure.Row(COUNTED, COUNTS, tuple(seconds))


async def _reset(engine: AsyncEngine) -> None:
    await database.truncate(engine)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {THROUGHPUT_TABLE_NAME}"))


async def _completed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        total = await conn.execute(
            text(f"SELECT coalesce(sum(completed), 0) FROM {THROUGHPUT_TABLE_NAME}")
        )
        return int(total.scalar_one())
