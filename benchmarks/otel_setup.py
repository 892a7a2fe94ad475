"""Imported by the workers of `observe_cost`'s traced variants (`--import`), as an application's
task module would: the OpenTelemetry SDK's tracer provider, its spans batched and discarded."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Discard(SpanExporter):
    """An exporter with no collector behind it: the spans' cost, without a network's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


# What production uses: spans queued, exported in batches from a thread of their own.
_provider = TracerProvider()
_provider.add_span_processor(BatchSpanProcessor(Discard()))
trace.set_tracer_provider(_provider)
