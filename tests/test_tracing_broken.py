"""A tracer that raises (a span processor's bug, an exporter's) never fails an enqueue: the
task is inserted in the caller's transaction, with the ambient context, and the error logged.

Found by a cold review: a span processor raising in `on_start` or `on_end` made `enqueue()`
and `enqueue_many()` raise, rolling back the application's business transaction with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.util._once import Once
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import PayloadError, enqueue, enqueue_many
from tests.tracing_tasks import Job, traced

# Marked here, not only by conftest after collection: anyio must see the mark while the
# parametrized tests are collected.
pytestmark = pytest.mark.anyio


class _Raising(SpanProcessor):
    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.stage == "on_start":
            raise RuntimeError("a span processor's bug, at start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.stage == "on_end":
            raise RuntimeError("a span processor's bug, at end")


def _reset_global_provider() -> None:
    # As tests/test_tracing.py: OpenTelemetry's global provider may be set once per process.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@contextmanager
def _raising_provider(stage: str) -> Iterator[None]:
    """A global tracer provider whose span processor raises `stage` ("on_start", "on_end")."""
    provider = TracerProvider()
    provider.add_span_processor(_Raising(stage))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        _reset_global_provider()


@pytest.mark.parametrize("stage", ["on_start", "on_end"])
async def test_a_raising_tracer_does_not_fail_the_enqueue(
    stage: str, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    with _raising_provider(stage):
        session.add(enqueue(traced, Job(n=1)))
        assert await enqueue_many(session, traced, [Job(n=2), Job(n=3)]) == 2
        keyed = await enqueue_many(session, traced, [Job(n=4)], unique_key=lambda j: f"b{j.n}")
    assert keyed == 1
    await session.flush()
    found = await session.execute(text("SELECT payload->>'n' FROM sqlatasks_tasks ORDER BY 1"))
    assert list(found.scalars()) == ["1", "2", "3", "4"]
    raised = [r for r in caplog.records if "OpenTelemetry tracer raised" in r.getMessage()]
    assert len(raised) == 3  # one per enqueue() call and per enqueue_many() batch
    assert all(stage.removeprefix("on_") in str(r.exc_info and r.exc_info[1]) for r in raised)


@pytest.mark.parametrize("stage", ["on_start", "on_end"])
async def test_a_batch_error_is_raised_as_itself(stage: str, session: AsyncSession) -> None:
    # The second payload fails validation while the COPY streams, inside the send span.
    with _raising_provider(stage), pytest.raises(PayloadError):
        await enqueue_many(session, traced, [Job(n=1), {"n": "not a number"}])
