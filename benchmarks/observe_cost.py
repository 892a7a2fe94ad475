"""`observe_cost`: what metrics and traces cost the runner, in one run.

Four runner variants take turns round by round, each measured twice:

- off: no --metrics-port, no tracer provider (the baseline);
- metrics: `--metrics-port`, with /metrics scraped every second (harsher than Prometheus'
  usual 15 s) while the runner works;
- tracing: the workers import `benchmarks.otel_setup`, which sets the OpenTelemetry SDK's
  tracer provider with a BatchSpanProcessor and an exporter that discards the spans (what is
  measured is the spans, not a collector's network), and every task carries a trace context;
- metrics and tracing.

Throughput: `--burst --workers 1 --concurrency 50` draining pre-enqueued no-op tasks, from the
first worker's start to the runner's exit (as `process`). Pickup latency: an idle runner (1 x
10), tasks enqueued one at a time at random gaps of 5-50 ms; commit to the task's first line
(as `latency`), p50 and p95.

Then two costs outside the runner, as ratios to their own baselines: the claim statement
returning `trace_context` (schema v8) against the same statement without it, on rows with and
without a context; and `enqueue()` with a tracer provider set in the producer (a `send` span
per call) against none.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util._once import Once
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from benchmarks import database, measure, process
from benchmarks.noop import Nothing, Stamp, noop, stamp
from sqlatasks import enqueue, enqueue_many, tracing
from sqlatasks.sql import claim, outcomes

TASKS, QUICK_TASKS = 10_000, 2_000
PICKUPS, QUICK_PICKUPS = 100, 40
ROUNDS, QUICK_ROUNDS = 2, 1
VARIANTS = ("off", "metrics", "tracing", "metrics and tracing")
ENQUEUES = 20_000
# Any sampled context: the rows of the traced variants carry one, as an app's traced enqueue.
_AMBIENT = SpanContext(0x5A7A, 0x7A5C, is_remote=True, trace_flags=TraceFlags(1))


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks, pickups = (QUICK_TASKS, QUICK_PICKUPS) if quick else (TASKS, PICKUPS)
    engine = create_async_engine(url)
    drained: dict[str, list[float]] = {v: [] for v in VARIANTS}
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for round_ in range(QUICK_ROUNDS if quick else ROUNDS):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                drained[variant].append(await _throughput(engine, url, tasks, variant))
                latencies[variant] += await _pickups(engine, url, pickups, variant)
                print(f"  {variant}: round {round_ + 1} done", flush=True)
        rows = _runner_rows(tasks, drained, latencies)
        rows += await _claim_rows(engine, tasks)
    finally:
        await database.truncate(engine)
        await engine.dispose()
    return rows + _enqueue_rows()


def _flags(variant: str, *, port: int) -> list[str]:
    flags = []
    if "metrics" in variant:
        flags += ["--metrics-port", str(port)]
    if "tracing" in variant:
        flags += ["--import", "benchmarks.otel_setup"]
    return flags


@contextlib.contextmanager
def _traced(variant: str) -> Iterator[None]:
    """Enqueue under a trace context when the variant traces (no provider needed here)."""
    if "tracing" not in variant:
        yield
        return
    with trace.use_span(NonRecordingSpan(_AMBIENT)):
        yield


async def _throughput(engine: AsyncEngine, url: str, tasks: int, variant: str) -> float:
    await database.truncate(engine)
    async with async_sessionmaker(engine)() as session, session.begin():
        with _traced(variant):
            await enqueue_many(session, noop, (Nothing(i=i) for i in range(tasks)))
    port = _free_port()
    scraping = asyncio.create_task(_scrape(port)) if "metrics" in variant else None
    try:
        flags = _flags(variant, port=port)
        seconds, _, _ = await process.runner_drain(url, 1, 50, *flags)
    finally:
        if scraping is not None:
            scraping.cancel()
    if left := await process.queued(engine):
        raise SystemExit(f"benchmarks: observe_cost left {left} tasks ({variant})")
    return seconds


async def _pickups(engine: AsyncEngine, url: str, tasks: int, variant: str) -> list[float]:
    await database.truncate(engine)
    stamps = Path(tempfile.mkdtemp(prefix="sqlatasks-stamps-")) / "stamps"
    port = _free_port()
    runner = await database.start_runner(
        url,
        *("--workers", "1", "--concurrency", "10", "--idle-sleep", "1"),
        *_flags(variant, port=port),
        env={"SQLATASKS_BENCH_STAMPS": str(stamps)},
        log=False,
    )
    scraping = asyncio.create_task(_scrape(port)) if "metrics" in variant else None
    committed: dict[int, float] = {}
    sessions = async_sessionmaker(engine)
    try:
        # Start-up: a first task's run says the worker is up; an idle runner is what is measured.
        async with sessions() as session, session.begin():
            session.add(enqueue(stamp, Stamp(key=-1)))
        await _wait_for(stamps, 1)
        await asyncio.sleep(1)
        for key in range(tasks):
            async with sessions() as session, session.begin():
                with _traced(variant):
                    session.add(enqueue(stamp, Stamp(key=key)))
            committed[key] = time.time()
            await asyncio.sleep(random.uniform(0.005, 0.05))
        started = await _wait_for(stamps, tasks + 1)
    finally:
        if scraping is not None:
            scraping.cancel()
        runner.terminate()
        await runner.wait()
    return [started[key] - committed[key] for key in committed]


def _runner_rows(
    tasks: int, drained: dict[str, list[float]], latencies: dict[str, list[float]]
) -> list[measure.Row]:
    rows = []
    base = f"runner --burst 1x50, {VARIANTS[0]}"
    p50_off = statistics.median(latencies[VARIANTS[0]])
    for variant in VARIANTS:
        q = statistics.quantiles(latencies[variant], n=100)
        p50 = statistics.median(latencies[variant])
        notes: dict[str, float | str] = {
            "pickup p50_ms": round(p50 * 1000, 1),
            "pickup p95_ms": round(q[94] * 1000, 1),
            "pickup p50 / off": round(p50 / p50_off, 2),
        }
        name = f"runner --burst 1x50, {variant}"
        baselines = () if name == base else (base,)
        rows.append(measure.Row(name, tasks, tuple(drained[variant]), baselines, notes))
    return rows


_WITHOUT = text(
    claim._CLAIM_ANY_QUEUE.text.replace(",\n          t.trace_context::text AS trace_context", "")
)
assert "t.trace_context" not in _WITHOUT.text, "the claim's RETURNING changed: update observe_cost"


async def _claim_rows(engine: AsyncEngine, tasks: int) -> list[measure.Row]:
    names = {
        "before": "claim+ack x50, RETURNING without trace_context (v7), rows without",
        "null": "claim+ack x50, RETURNING trace_context (v8), rows without",
        "traced": "claim+ack x50, RETURNING trace_context (v8), rows with",
    }
    seconds: dict[str, list[float]] = {k: [] for k in names}
    for round_ in range(4):
        for key in list(names) if round_ % 2 == 0 else list(names)[::-1]:  # drift falls alike
            await database.truncate(engine)
            async with async_sessionmaker(engine)() as session, session.begin():
                with _traced("tracing" if key == "traced" else "off"):
                    await enqueue_many(session, noop, (Nothing(i=i) for i in range(tasks)))
            seconds[key].append(await _claim_drain(engine, old=key == "before"))
    base = names["before"]
    return [
        measure.Row(name, tasks, tuple(seconds[k]), () if name == base else (base,))
        for k, name in names.items()
    ]


async def _claim_drain(engine: AsyncEngine, *, old: bool) -> float:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        start = time.perf_counter()
        while claimed := await _claim(conn, uuid.uuid4(), old=old):
            await outcomes.task_ack(conn, claimed)
        return time.perf_counter() - start


async def _claim(
    conn: AsyncConnection, token: uuid.UUID, *, old: bool
) -> list[tuple[int, uuid.UUID]]:
    """One claim of 50 by the statement with or without the column, run the same way."""
    statement = _WITHOUT if old else claim._CLAIM_ANY_QUEUE
    parameters = {"limit": 50, "lease": 60.0, "worker": "bench", "token": token}
    return [(row.id, token) for row in await conn.execute(statement, parameters)]


def _enqueue_rows() -> list[measure.Row]:
    """`enqueue()` (no database) as without the extra, with it and no provider, then with the
    SDK's provider (a `send` span each)."""
    tracing.AVAILABLE = False  # as if opentelemetry were not installed
    try:
        without = _time_enqueues()
    finally:
        tracing.AVAILABLE = True
    untraced = _time_enqueues()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))  # as benchmarks.otel_setup
    _set_provider(provider)
    try:
        traced = _time_enqueues()
    finally:
        _set_provider(None)
        provider.shutdown()
    base = "enqueue(), without the otel extra"
    return [
        measure.Row(base, ENQUEUES, tuple(without)),
        measure.Row("enqueue(), the extra, no tracer provider", ENQUEUES, tuple(untraced), (base,)),
        measure.Row("enqueue(), SDK provider (a send span each)", ENQUEUES, tuple(traced), (base,)),
    ]


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _time_enqueues() -> list[float]:
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(ENQUEUES):
            enqueue(noop, Nothing(i=i))
        rounds.append(time.perf_counter() - start)
    return rounds


def _set_provider(provider: TracerProvider | None) -> None:
    # OpenTelemetry sets its global provider once per process; its test utilities reset these
    # globals, as here, so that the scenarios after this one run without a provider.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)


async def _scrape(port: int) -> None:
    while True:
        await asyncio.sleep(1)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


def _get(address: str) -> None:
    with urllib.request.urlopen(address, timeout=5) as response:
        response.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for(stamps: Path, tasks: int) -> dict[int, float]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(found := _read(stamps)) >= tasks:
            return found
        await asyncio.sleep(0.1)
    raise SystemExit("benchmarks: the observe_cost pickups did not all run within 120 s")


def _read(stamps: Path) -> dict[int, float]:
    if not stamps.exists():
        return {}
    lines = [line.split() for line in stamps.read_text().splitlines() if line]
    return {int(k): float(t) for k, t in lines}
