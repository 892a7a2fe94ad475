"""Traces through OpenTelemetry (the `otel` extra): one trace from the request that enqueued a
task to each attempt that ran it.

- `enqueue()` and `enqueue_many()` record the current trace context in the row (schema
  version 8, column `trace_context`): the carrier the global propagator fills (W3C
  `traceparent`, and `tracestate`/`baggage` when set), as JSON text. With a tracer provider
  configured they first open a PRODUCER span, `send <queue>`, and record its context (one
  span per `enqueue()` call, one per `enqueue_many()` batch, covering its COPY).
- The worker runs each attempt in a CONSUMER span, `process <queue>`, a child of the recorded
  context and linked to it; an attempt of an untraced task starts a trace of its own.

Names and attributes follow OpenTelemetry's messaging conventions (v1.45, "Messaging spans",
status: development): `messaging.system` "sqlatasks", `messaging.operation.name` and
`.type` ("send"/"process"), `messaging.destination.name` (the queue), `messaging.message.id`
(the task id, on process spans), `messaging.batch.message_count` (on a batch's send span),
and `sqlatasks.task.name`, `sqlatasks.task.attempt`. A failed attempt's span has status ERROR,
`error.type` (the exception's class, `module.QualName`, or "cancelled" for an attempt cut
short by its time limit, an operator's cancel or shutdown) and the exception as an event.

Only opentelemetry-api's global providers are used: nothing is exported unless the
application configures a tracer provider with an exporter. Without the extra, or without a
provider, the worker adds no middleware (`configured()` is read once, after the worker
imports the task modules), and `enqueue` stores the ambient context only if there is one
(e.g. one extracted from an incoming request's headers), else NULL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlatasks import cancellation, errors
from sqlatasks.context import TaskRun
from sqlatasks.hooks import CallNext

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the `otel` extra is not installed
    AVAILABLE = False
else:
    AVAILABLE = True

log = logging.getLogger(__name__)

_TRACER_RAISED = "the OpenTelemetry tracer raised around a send span; the enqueue goes on"
SYSTEM = "sqlatasks"
"""`messaging.system`: not one of the conventions' well-known values, which name brokers."""
_tracer: tuple[Any, Any] = (None, None)
"""(provider, its tracer for sqlatasks): one tracer per provider, not one per span."""


def configured() -> bool:
    """Whether OpenTelemetry is installed and the application set a global tracer provider
    (`trace.set_tracer_provider`, or `OTEL_PYTHON_TRACER_PROVIDER`)."""
    if not AVAILABLE:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def enqueue_context(queue: str, task_name: str) -> str | None:
    """The trace context to store with one task, as JSON text; None when there is none.

    With a provider configured, the context of a `send <queue>` span opened and closed here;
    else the ambient context, passed through. A propagator that raises is logged, and the
    task is stored without a context; so is a tracer (its SDK, a span processor) that raises
    opening or closing the span, and the ambient context is stored: tracing never fails an
    enqueue.
    """
    if not AVAILABLE:
        return None
    if not configured():
        return _carrier()
    carrier = None
    try:
        with _get_tracer().start_as_current_span(
            f"send {queue}", kind=trace.SpanKind.PRODUCER, attributes=_send(queue, task_name)
        ):
            carrier = _carrier()
    except Exception:
        log.exception(_TRACER_RAISED)
        return _carrier() if carrier is None else carrier
    return carrier


@dataclass(slots=True)
class Sending:
    """One `enqueue_many` batch's trace context (`carrier`, JSON text or None), and its span."""

    carrier: str | None
    span: Any = None

    def sent(self, count: int) -> None:
        """Record how many tasks the batch inserted."""
        if self.span is not None:
            self.span.set_attribute("messaging.batch.message_count", count)


@contextmanager
def sending_batch(queue: str, task_name: str) -> Iterator[Sending]:
    """A `send <queue>` span around one `enqueue_many` batch (when a provider is configured),
    and the context every row of the batch records. An exception from the batch is recorded
    on the span, and raised on. A tracer that raises opening or closing the span is logged,
    never raised: the batch runs, with the ambient context, and its rows stay inserted."""
    if not configured():
        yield Sending(_carrier() if AVAILABLE else None)
        return
    try:
        span_manager = _get_tracer().start_as_current_span(
            f"send {queue}", kind=trace.SpanKind.PRODUCER, attributes=_send(queue, task_name)
        )
        span = span_manager.__enter__()
    except Exception:
        log.exception(_TRACER_RAISED)
        yield Sending(_carrier())
        return
    try:
        yield Sending(_carrier(), span)
    except BaseException as exc:
        _close(span_manager, exc)
        raise
    _close(span_manager, None)


def _close(span_manager: Any, exc: BaseException | None) -> None:
    """End a `send` span; a tracer that raises doing so is logged (the batch's own exception,
    if any, is what the caller raises)."""
    try:
        if exc is None:
            span_manager.__exit__(None, None, None)
        else:
            span_manager.__exit__(type(exc), exc, exc.__traceback__)
    except Exception as raised:
        if raised is not exc:
            log.exception(_TRACER_RAISED)


async def middleware(run: TaskRun, call_next: CallNext) -> None:
    """Run the attempt in a `process <queue>` CONSUMER span, a child of the context its
    enqueue recorded (and linked to it). The worker adds it when `configured()`; add it
    yourself (`hooks.add_middleware`) to trace `sqlatasks.testing.run_pending`."""
    parent = _extract(run.trace_context)
    links = []
    if parent is not None:
        recorded = trace.get_current_span(parent).get_span_context()
        if recorded.is_valid:
            links.append(trace.Link(recorded))
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": run.queue,
        "messaging.message.id": str(run.id),
        "sqlatasks.task.name": run.task_name,
        "sqlatasks.task.attempt": run.attempt,
    }
    with _get_tracer().start_as_current_span(
        f"process {run.queue}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        record_exception=False,  # recorded below, BaseExceptions (cancellations) included
        set_status_on_exception=False,
    ) as span:
        try:
            await call_next()
        except BaseException as exc:
            _record(span, exc)
            raise


def _record(span: Any, exc: BaseException) -> None:
    if isinstance(exc, errors.Snooze):
        span.add_event("snoozed", {"sqlatasks.snooze.seconds": float(exc.after)})
        return
    if cancellation.ours(exc):
        kind = "cancelled"
        description = "cut short: its time limit, an operator's cancel, or shutdown"
    else:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        description = errors.one_line(exc)
        span.record_exception(exc)
    span.set_attribute("error.type", kind)
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))


def _get_tracer() -> Any:
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer("sqlatasks"))
    return _tracer[1]


def _send(queue: str, task_name: str) -> dict[str, str]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
        "sqlatasks.task.name": task_name,
    }


def _carrier() -> str | None:
    """The current context as the global propagator writes it, in JSON; None when empty."""
    if not otel_context.get_current():
        return None  # an empty context (no span, no baggage): nothing to propagate, and fast
    carrier: dict[str, str] = {}
    try:
        propagate.inject(carrier)
    except Exception:
        log.exception("the OpenTelemetry propagator raised; the task is stored without context")
        return None
    if not carrier:
        return None
    text = json.dumps(carrier, separators=(",", ":"))
    return None if "\\u0000" in text else text  # jsonb refuses NUL; W3C headers never hold one


def _extract(recorded: str | None) -> Any:
    """The context `recorded` (JSON text) holds, or None (then the ambient one applies)."""
    if recorded is None:
        return None
    try:
        carrier = json.loads(recorded)
        if not isinstance(carrier, Mapping):
            raise TypeError(f"a {type(carrier).__name__}, not an object")
        return propagate.extract({str(k): str(v) for k, v in carrier.items()})
    except Exception as exc:
        log.warning("a task's trace context is unreadable (%s); its span starts a trace", exc)
        return otel_context.Context()
