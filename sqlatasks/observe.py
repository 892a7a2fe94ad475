"""The supervisor's windows: the workers' log relay, and the metrics port.

`serve_relay` accepts the workers' log connections (sqlatasks.logs). With --metrics-port,
`serve_http` answers, from a thread of its own (stdlib wsgiref, as prometheus_client's own
server does), three GETs:

- /metrics: Prometheus text format. Task counters and durations come from the workers as
  events on the log relay and are aggregated here, in one registry: no multiprocess files to
  clean up after a worker dies, and a restarted worker does not reset a counter. Queue depth
  and lag are read by one bounded statement (sql/metrics) per scrape, at most once a second.
- /healthz: 200 while every worker's heartbeat is fresh, else 503 and the reason.
- /readyz: 200 when the database answers and its schema is the version this code needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import errors, logs, schema_check
from sqlatasks.logs import Relay
from sqlatasks.settings import STARTUP_GRACE, Settings
from sqlatasks.sql import metrics as metrics_sql
from sqlatasks.sql import server

if TYPE_CHECKING:
    from sqlatasks.supervisor import WorkerSeat

log = logging.getLogger(__name__)
MAX_LINE = logs.MAX_LINE
"""Bytes of one relayed record at most: the workers cut longer ones to fit (`logs.fitted`)."""
SCRAPE_MIN_INTERVAL = 1.0
"""Seconds between two queue statements, however many scrapers there are."""


async def serve_relay(relay: Relay, *, task_status: TaskStatus[int]) -> None:
    """Accept worker log connections on 127.0.0.1 (a free port, reported to `start`)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))

        async def connection(stream: SocketStream) -> None:
            relay.opened()
            async with stream:
                lines = BufferedByteReceiveStream(stream)
                try:
                    if await lines.receive_until(b"\n", 64) != relay.token.encode():
                        return
                    while True:
                        relay.line(await lines.receive_until(b"\n", MAX_LINE))
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                    return
                except anyio.DelimiterNotFound:
                    # workers cut their records to fit (logs.fitted): another sender's line
                    log.warning("a log line over %d bytes: its connection is dropped", MAX_LINE)
                finally:
                    relay.closed()

        await listener.serve(connection)


def seat_health(seats: Iterable[WorkerSeat], check_interval: float) -> tuple[int, list[str]]:
    """How many workers are sound, and why the others are not: missing, or with a stale
    heartbeat (a worker still importing its modules, within STARTUP_GRACE, is sound).

    Stale means older than one check interval: half the age at which the supervisor kills a
    worker (attempts.heartbeat_timeout), so a probe sees the trouble before the restart.
    """
    problems = []
    now = anyio.current_time()
    seats = list(seats)
    for seat in seats:
        age = seat.heartbeat_age()
        if seat.scope is None:
            problems.append(f"worker-{seat.index} is not running (restarting)")
        elif age is None and now - seat.started_at > STARTUP_GRACE:
            problems.append(f"worker-{seat.index} never started beating")
        elif age is not None and age > check_interval:
            problems.append(f"worker-{seat.index}'s heartbeat is {age:.1f} s old")
    return len(seats) - len(problems), problems


class Metrics:
    """The runner's Prometheus registry (needs the `metrics` extra: prometheus_client)."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise errors.ConfigurationError(
                "--metrics-port needs prometheus_client: pip install 'sqlatasks[metrics]'"
            ) from None
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.tasks = prom.Counter(
            "sqlatasks_tasks",
            "Executions ended, by outcome",
            ["task", "queue", "outcome"],
            registry=r,
        )
        self.duration = prom.Histogram(
            "sqlatasks_task_duration_seconds", "Execution time", ["task", "queue"], registry=r
        )
        self.depth = prom.Gauge(
            "sqlatasks_queue_depth",
            "Tasks by state: due, running, scheduled, parked (each capped)",
            ["queue", "state"],
            registry=r,
        )
        self.lag = prom.Gauge(
            "sqlatasks_queue_lag_seconds", "Age of the oldest due task", ["queue"], registry=r
        )
        self.workers_alive = prom.Gauge(
            "sqlatasks_workers_alive", "Workers with a fresh heartbeat", registry=r
        )
        self.restarts = prom.Counter(
            "sqlatasks_worker_restarts", "Workers restarted by the supervisor", registry=r
        )
        self._exposition = prom.generate_latest
        self._refreshed = 0.0

    def on_event(self, event: dict[str, Any]) -> None:
        """A worker's event (from the log relay): one execution ended."""
        if event.get("event") == "end":
            task, queue = str(event["task"]), str(event["queue"])
            self.tasks.labels(task, queue, str(event["outcome"])).inc()
            self.duration.labels(task, queue).observe(float(event["duration"]))

    async def refresh(self, engine: AsyncEngine) -> None:
        """Read queue depth and lag, unless read less than a second ago."""
        if time.monotonic() - self._refreshed < SCRAPE_MIN_INTERVAL:
            return
        self._refreshed = time.monotonic()
        async with engine.connect() as conn:
            gauges = await metrics_sql.queue_gauges(conn)
        self.depth.clear()
        self.lag.clear()
        for gauge in gauges:
            self.depth.labels(gauge.queue, gauge.state).set(gauge.depth)
            if gauge.state == "due":
                self.lag.labels(gauge.queue).set(gauge.lag)
            else:
                self.lag.labels(gauge.queue).inc(0)  # a queue with nothing due lags 0

    def exposition(self) -> bytes:
        return self._exposition(self.registry)


async def ready_problem(engine: AsyncEngine) -> str | None:
    """Why the runner is not ready: the database unreachable, or its queue table missing or
    behind (`schema_check.version_problem`); else None."""
    try:
        async with engine.connect() as conn:
            found = await server.schema_version(conn)
    except Exception as exc:
        return f"database unreachable: {errors.one_line(exc)}"
    return schema_check.version_problem(found)


Probe = Callable[[], tuple[int, list[str]]]


def serve_http(
    host: str,
    port: int,
    health: Probe,
    engine: AsyncEngine,
    metrics: Metrics | None,
) -> Callable[[], None]:
    """Serve /metrics, /healthz and /readyz in a daemon thread; returns how to stop it.

    Call from the event loop's thread: the handlers reach the loop through anyio's portal.
    """
    token = anyio.lowlevel.current_token()

    def app(environ: dict[str, Any], respond: Callable[..., Any]) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        status, body, kind = "404 Not Found", b"not found\n", "text/plain"
        if path == "/healthz":
            _, problems = anyio.from_thread.run_sync(health, token=token)
            status = "503 Service Unavailable" if problems else "200 OK"
            body = ("\n".join(problems) or "ok").encode() + b"\n"
        elif path == "/readyz":
            problem = anyio.from_thread.run(ready_problem, engine, token=token)
            status = "503 Service Unavailable" if problem else "200 OK"
            body = (problem or "ok").encode() + b"\n"
        elif path == "/metrics" and metrics is not None:
            anyio.from_thread.run(metrics.refresh, engine, token=token)
            metrics.workers_alive.set(anyio.from_thread.run_sync(health, token=token)[0])
            status, body, kind = "200 OK", metrics.exposition(), "text/plain; version=0.0.4"
        respond(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return iter([body])

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="sqlatasks metrics", daemon=True)
    thread.start()
    log.info("serving /metrics, /healthz, /readyz on http://%s:%d", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop


def start_http(
    settings: Settings, seats: list[WorkerSeat], engine: AsyncEngine, metrics: Metrics | None
) -> Callable[[], None]:
    """The metrics port, when --metrics-port is given; returns how to stop it."""
    if settings.metrics_port is None:
        return lambda: None

    def health() -> tuple[int, list[str]]:
        return seat_health(seats, settings.check_interval)

    return serve_http(settings.metrics_host, settings.metrics_port, health, engine, metrics)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow /readyz must not hold up /metrics, nor the exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""
