"""Tasks for tests/test_tracing.py. In a runner's worker (where the ledger folder is set), this
module configures OpenTelemetry's SDK at import, as an application's task module would, with
an exporter that writes each finished span to the ledger: the test process reads them there."""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger


class Job(BaseModel):
    n: int = 0
    fail_first: bool = False


@task(queue="traced", max_attempts=2, retry_delay=0)
async def traced(payload: Job) -> None:
    # The task's own code sees the attempt's span as current (its own spans nest under it).
    span = trace.get_current_span().get_span_context()
    if ledger.ENV in os.environ:
        ledger.write("ran", payload.n, trace_id=f"{span.trace_id:032x}")
    if payload.fail_first and current_task().attempt == 1:
        raise LookupError(f"{payload.n} fails its first attempt")


class LedgerExporter(SpanExporter):
    """Each finished span as one ledger entry `span` (ids in hex, as W3C writes them)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            ledger.write(
                "span",
                name=span.name,
                kind=span.kind.name,
                trace_id=f"{context.trace_id:032x}",
                span_id=f"{context.span_id:016x}",
                parent_id=None if span.parent is None else f"{span.parent.span_id:016x}",
                links=[f"{link.context.span_id:016x}" for link in span.links],
                status=span.status.status_code.name,
                attributes=dict(span.attributes or {}),
            )
        return SpanExportResult.SUCCESS


if ledger.ENV in os.environ:  # in a runner's worker: the application's configuration
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(LedgerExporter()))
    trace.set_tracer_provider(provider)
