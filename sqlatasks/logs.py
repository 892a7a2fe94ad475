"""Logging across the runner's processes: stdlib records, moved from workers to the supervisor.

Each worker sends its records, structured (one JSON object per line), over a loopback TCP
connection to the supervisor (`RelayHandler`, a `logging.handlers.SocketHandler`); the
supervisor formats them, with its own, on its stderr (`Relay`). TCP on 127.0.0.1 works on
every platform Python runs on; no `/proc`, no inherited file descriptor. JSON rather than
SocketHandler's pickle: a local process that connects can at worst inject a log line, never
run code; and it must first send the runner's random token.

The relay handler survives the application's own logging set-up at import
(`logging.basicConfig(force=True)`, `dictConfig` disabling existing loggers): `attach` puts it
back on the root logger and re-enables sqlatasks' loggers, and the worker calls it after its
imports and before each task (`reassert`). Task records carry `task_id`, `task_name` and
`task_attempt` attributes (a log record factory reading `current_task()`), for any formatter.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from sqlatasks.context import current_run

LogFormat = Literal["text", "json"]
TASK_FIELDS = ("task_id", "task_name", "task_attempt")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(origin)s %(name)s: %(message)s"
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_attached: logging.Handler | None = None
MAX_LINE = 1 << 20
"""Bytes of one relayed line at most, newline included: the supervisor reads no further. A
record that would be longer has its longest strings cut to fit (`fitted`), marked as cut."""
CUT_MARK = " [sqlatasks: {} more characters cut, the record was over 1 MiB]"


def formatter(log_format: LogFormat, origin: str) -> logging.Formatter:
    """The runner's formatter; `origin` names the process when a record does not."""
    if log_format == "json":
        return JsonFormatter(origin)
    return logging.Formatter(TEXT_FORMAT, defaults={"origin": origin})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, origin, message, the task's fields and
    any other `extra`, and the traceback as `exception`."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self._origin = origin

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "origin": getattr(record, "origin", self._origin),
            "message": record.getMessage(),
        }
        fields.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exception"] = record.exc_text
        return json.dumps(fields, default=str)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key != "origin"
    }


def install_record_factory() -> None:
    """Give every record made inside a task its task's id, name and attempt."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "sqlatasks", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        run = current_run()
        if run is not None:
            record.task_id = run.id
            record.task_name = run.task_name
            record.task_attempt = run.attempt
        return record

    factory.sqlatasks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def attach(handler: logging.Handler, level: str) -> None:
    """Make `handler` (the runner's) receive every record at `level` and above, whatever the
    application did to the logging configuration since: idempotent and cheap."""
    global _attached
    _attached = handler
    root = logging.getLogger()
    if handler not in root.handlers:
        root.addHandler(handler)
    if root.level > logging.getLevelName(level) or root.level == logging.NOTSET:
        root.setLevel(level)
    ours = logging.getLogger("sqlatasks")
    ours.setLevel(level)  # our lines keep the runner's level, whatever the root's
    ours.disabled = False
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("sqlatasks.") and isinstance(logger, logging.Logger):
            logger.disabled = False  # dictConfig(disable_existing_loggers=True) did this


def reassert() -> None:
    """Put the attached handler back if a lazily imported module removed it."""
    if _attached is not None and _attached not in logging.getLogger().handlers:
        attach(_attached, logging.getLevelName(logging.getLogger("sqlatasks").level))


def output() -> logging.Handler:
    """The handler this process attached (the runner's stderr), else a plain stderr one."""
    return _attached or logging.StreamHandler(sys.stderr)


def detach() -> None:
    global _attached
    if _attached is not None:
        logging.getLogger().removeHandler(_attached)
        _attached = None


class RelayHandler(logging.handlers.SocketHandler):
    """A worker's records, and its metric events, to the supervisor: JSON lines over TCP.

    Sending blocks like any stream write; a supervisor that is gone loses the lines
    (SocketHandler retries the connection with backoff), and the worker carries on.
    """

    def __init__(self, port: int, token: str, origin: str) -> None:
        super().__init__("127.0.0.1", port)
        self._token = token
        self._origin = origin

    def makeSocket(self, timeout: float = 1) -> socket.socket:
        sock = super().makeSocket(timeout)
        sock.sendall(self._token.encode() + b"\n")
        return sock

    def makePickle(self, record: logging.LogRecord) -> bytes:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        fields = {key: value for key, value in record.__dict__.items() if key != "exc_info"}
        fields.update(msg=record.getMessage(), args=None, origin=self._origin)
        return fitted(fields)  # the supervisor reads MAX_LINE bytes of a line at most

    def send_event(self, event: dict[str, Any]) -> None:
        """Send a metric event (a dict with an "event" key) on the same connection."""
        line = json.dumps(event, default=str).encode() + b"\n"
        with self.lock:  # type: ignore[union-attr]
            self.send(line)


def fitted(fields: dict[str, Any], limit: int = MAX_LINE) -> bytes:
    """`fields` as one JSON line of at most `limit` bytes: a longer record has its string
    fields (the message, the traceback, an `extra`) cut to fair shares of the room — a short
    one whole, the long ones alike — each cut one ending in CUT_MARK, saying how many
    characters went. So the line still reaches the runner's stderr, with its start."""
    line = _line(fields)
    target = limit
    while len(line) > limit:
        line = _cut(fields, target)
        target -= len(line) - limit + 1024  # JSON's escapes made a cut too long: again
    return line


def _cut(fields: dict[str, Any], limit: int) -> bytes:
    texts = [key for key, value in fields.items() if isinstance(value, str)]
    room = limit - len(_line({**fields, **dict.fromkeys(texts, "")})) - 16
    if room < len(CUT_MARK) * len(texts):  # a huge non-string extra: the bare record
        keep = ("name", "levelname", "levelno", "created", "msecs", "origin", "msg")
        return fitted({key: fields[key] for key in keep if key in fields}, limit)
    size = {key: len(json.dumps(fields[key])) - 2 for key in texts}  # bytes, as JSON writes
    out = dict(fields)
    for done, key in enumerate(sorted(texts, key=size.__getitem__)):
        share = room // (len(texts) - done)
        if size[key] > share:
            text = fields[key]
            kept = max((share - len(CUT_MARK) - 12) * len(text) // size[key], 0)
            out[key] = text[:kept] + CUT_MARK.format(len(text) - kept)
        room -= len(json.dumps(out[key])) - 2
    return _line(out)


def _line(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, default=str).encode() + b"\n"


class Relay:
    """The supervisor's end: checks each connection's token, hands records to `output` (in a
    thread of its own: a blocked stderr must not block the supervisor's loop) and metric
    events to `on_event`."""

    def __init__(self, output: logging.Handler, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.token = os.urandom(16).hex()
        self.connections = 0
        self._idle = anyio.Event()
        self._on_event = on_event
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, output)
        self._listener.start()

    def stop(self) -> None:
        self._listener.stop()

    def opened(self) -> None:
        self.connections += 1

    def closed(self) -> None:
        self.connections -= 1
        if not self.connections:
            self._idle.set()

    async def drained(self) -> None:
        """Return once every worker connection has closed (all their lines are in)."""
        if self.connections:
            self._idle = anyio.Event()
            await self._idle.wait()

    def line(self, raw: bytes) -> None:
        """One line from a worker: a log record or a metric event."""
        try:
            fields = json.loads(raw)
        except ValueError:
            return
        if not isinstance(fields, dict):
            return
        if "event" in fields:
            try:
                self._on_event(fields)
            except Exception as exc:  # a bad event must not end the relay
                print(f"sqlatasks: bad metric event: {exc!r}", file=sys.stderr)
            return
        fields.pop("exc_info", None)
        self._queue.put_nowait(logging.makeLogRecord(fields))
