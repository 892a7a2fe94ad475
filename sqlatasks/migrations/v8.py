"""Schema version 8: the trace context an enqueue recorded. Frozen.

Self-contained (one nullable column on the queue table's own), so that it can be renumbered
when branches merge.

`trace_context` is the carrier OpenTelemetry's global propagator filled at `enqueue()` (W3C
`traceparent`, and `tracestate` or `baggage` when there are any), as a JSON object of
strings; NULL when the application traces nothing, or has not installed the `otel` extra.
The worker reads it in the claim and runs the task in a span that continues that trace
(docs/tracing.md). Nullable and without a default, so adding it rewrites no row (a catalog
change only), and an untraced task stores nothing. No index: nothing looks rows up by it.
"""

from __future__ import annotations

UP = (
    """
-- The enqueue's trace context ({"traceparent": ..., ...}); NULL when nothing was traced.
ALTER TABLE sqlatasks_tasks ADD COLUMN trace_context jsonb
""",
)

DOWN = ("ALTER TABLE sqlatasks_tasks DROP COLUMN trace_context",)
