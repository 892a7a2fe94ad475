"""Traces (the `otel` extra): the enqueue records its trace context in the row, and each attempt
runs in a span of the same trace, with OpenTelemetry's SDK and its in-memory exporter.

In this process through `sqlatasks.testing.run_pending` (the middleware added by hand); across
processes with a real runner, whose worker exports its spans to the ledger (tests.tracing_tasks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.util._once import Once
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from sqlatasks import enqueue, enqueue_many, hooks, tracing
from sqlatasks.outcomes import Completed, Failed
from sqlatasks.testing import run_pending
from tests import ledger
from tests.processes import Runners
from tests.tracing_tasks import Job, traced


def _reset_global_provider() -> None:
    # OpenTelemetry lets a process set its global tracer provider once; its own test utilities
    # reset these two globals between tests, as this does.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A global SDK tracer provider for this test, its spans kept in memory; the tracing
    middleware around every execution in this process."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    hooks.clear()
    hooks.add_middleware(tracing.middleware)
    yield exporter
    hooks.clear()
    _reset_global_provider()
    provider.shutdown()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def test_the_enqueue_and_the_task_share_one_trace(
    spans: InMemorySpanExporter, session: AsyncSession
) -> None:
    with trace.get_tracer("app").start_as_current_span("POST /orders"):
        row = enqueue(traced, Job(n=1))
        session.add(row)
    assert json.loads(str(row.trace_context))["traceparent"].startswith("00-")
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Completed]

    (request,) = _named(spans, "POST /orders")
    (send,) = _named(spans, "send traced")
    (process,) = _named(spans, "process traced")
    trace_id, request_id = _ids(request)
    assert _ids(send)[0] == _ids(process)[0] == trace_id
    assert _parent(send) == request_id
    assert _parent(process) == _ids(send)[1]  # a child of the enqueue's span, and linked to it
    assert [link.context.span_id for link in process.links] == [_ids(send)[1]]
    assert (send.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert dict(process.attributes or {}) == {
        "messaging.system": "sqlatasks",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "traced",
        "messaging.message.id": str(outcomes[0].task.id),
        "sqlatasks.task.name": traced.name,
        "sqlatasks.task.attempt": 1,
    }
    assert process.status.status_code == StatusCode.UNSET


async def test_a_failed_attempt_records_its_exception_and_the_retry_continues_the_trace(
    spans: InMemorySpanExporter, session: AsyncSession
) -> None:
    with trace.get_tracer("app").start_as_current_span("request"):
        session.add(enqueue(traced, Job(n=1, fail_first=True)))
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Failed, Completed]

    (send,) = _named(spans, "send traced")
    first, second = _named(spans, "process traced")
    assert [_parent(first), _parent(second)] == [_ids(send)[1]] * 2
    assert (first.attributes or {})["sqlatasks.task.attempt"] == 1
    assert (second.attributes or {})["sqlatasks.task.attempt"] == 2
    assert first.status.status_code == StatusCode.ERROR
    assert (first.attributes or {})["error.type"] == "builtins.LookupError"
    assert [event.name for event in first.events] == ["exception"]
    assert second.status.status_code == StatusCode.UNSET


async def test_enqueue_many_records_one_send_span_per_batch(
    spans: InMemorySpanExporter, session: AsyncSession
) -> None:
    with trace.get_tracer("app").start_as_current_span("import"):
        assert await enqueue_many(session, traced, [Job(n=i) for i in range(3)]) == 3
        keyed = await enqueue_many(session, traced, [Job(n=7)], unique_key=lambda j: f"k{j.n}")
        assert keyed == 1
    contexts = await _contexts(session)
    copied, inserted = _named(spans, "send traced")
    assert (copied.attributes or {})["messaging.batch.message_count"] == 3
    assert (inserted.attributes or {})["messaging.batch.message_count"] == 1
    assert contexts == [_traceparent(copied)] * 3 + [_traceparent(inserted)]

    await run_pending(session)
    parents = sorted(_parent(s) or 0 for s in _named(spans, "process traced"))
    assert parents == sorted([_ids(copied)[1]] * 3 + [_ids(inserted)[1]])


def test_enqueue_many_in_a_synchronous_session_records_the_context(
    spans: InMemorySpanExporter, db_url: str
) -> None:
    engine = create_engine(db_url.replace("+asyncpg", "+psycopg2"))
    try:
        with Session(engine) as session, session.begin():
            assert enqueue_many(session, traced, [Job(n=1), Job(n=2)]) == 2
            found = session.execute(
                text("SELECT trace_context->>'traceparent' FROM sqlatasks_tasks")
            )
            (send,) = _named(spans, "send traced")
            assert list(found.scalars()) == [_traceparent(send)] * 2
            session.rollback()
    finally:
        engine.dispose()


async def test_an_untraced_task_or_an_unreadable_context_starts_a_trace(
    spans: InMemorySpanExporter, session: AsyncSession
) -> None:
    for context in [None, '"not an object"', '{"traceparent": "garbage"}']:
        row = enqueue(traced, Job(n=1))
        row.trace_context = context
        session.add(row)
    await run_pending(session)
    processes = _named(spans, "process traced")
    assert len(processes) == 3
    assert all(s.parent is None and not s.links for s in processes)
    assert len({_ids(s)[0] for s in processes}) == 3


async def test_without_a_provider_enqueue_stores_only_an_ambient_context(
    session: AsyncSession,
) -> None:
    _reset_global_provider()
    assert not tracing.configured()
    assert enqueue(traced, Job()).trace_context is None  # nothing traced: NULL, no span
    # A context extracted from an incoming request's headers, with no SDK here: passed on.
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(remote)):
        row = enqueue(traced, Job())
        session.add(row)
        assert await enqueue_many(session, traced, [Job()]) == 1
    expected = f"00-{0xABC:032x}-{0xDEF:016x}-01"
    assert json.loads(str(row.trace_context)) == {"traceparent": expected}
    assert await _contexts(session) == [expected, expected]


async def _contexts(session: AsyncSession) -> list[str | None]:
    await session.flush()
    found = await session.execute(
        text("SELECT trace_context->>'traceparent' FROM sqlatasks_tasks ORDER BY id")
    )
    return list(found.scalars())


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@pytest.mark.slow
async def test_a_runner_continues_the_enqueue_trace_in_its_worker(
    spans: InMemorySpanExporter, engine: AsyncEngine, start_runner: Runners
) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        with trace.get_tracer("app").start_as_current_span("POST /orders"):
            session.add(enqueue(traced, Job(n=1, fail_first=True)))
            session.add(enqueue(traced, Job(n=2)))
    (request,) = _named(spans, "POST /orders")
    sends = {_ids(s)[1] for s in _named(spans, "send traced")}
    trace_id = _ids(request)[0]

    start_runner("--workers", "1", imports=["tests.tracing_tasks"])
    found = await ledger.wait_for_entries(start_runner.folder, "span", 3)
    processes: list[dict[str, Any]] = [e.fields for e in found if e.fields["kind"] == "CONSUMER"]
    assert len(processes) == 3
    assert {p["trace_id"] for p in processes} == {f"{trace_id:032x}"}
    assert {p["parent_id"] for p in processes} == {f"{i:016x}" for i in sends}
    assert all(p["links"] == [p["parent_id"]] for p in processes)
    failed = [p for p in processes if p["status"] == "ERROR"]
    assert [(p["attributes"]["sqlatasks.task.attempt"], p["attributes"]["error.type"])
            for p in failed] == [(1, "builtins.LookupError")]  # fmt: skip
    ran = ledger.entries(start_runner.folder, "ran")
    assert {e.fields["trace_id"] for e in ran} == {f"{trace_id:032x}"}  # current in the task
