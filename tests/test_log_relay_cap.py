"""A worker's log record over the relay's 1 MiB line is cut to fit, with a mark saying so,
and still reaches the runner's stderr; the connection carries on with the next record. Before,
the supervisor dropped the record, and the rest of that worker's connection with it."""

from __future__ import annotations

import json
import logging

import anyio
import anyio.to_thread
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import enqueue, logs, observe
from tests import logging_big_tasks
from tests.processes import Runners

pytestmark = pytest.mark.anyio

CUT = r"\[sqlatasks: \d+ more characters cut, the record was over 1 MiB\]"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "myapp", "levelname": "WARNING", "msg": message})


def test_a_record_over_the_cap_is_cut_with_a_mark_and_keeps_its_start() -> None:
    handler = logs.RelayHandler(1, "token", "worker-1")  # no connection made: only encoding
    line = handler.makePickle(_record("start " + "é" * (1 << 20) + " end"))
    assert len(line) <= logs.MAX_LINE
    message = json.loads(line)["msg"]
    assert message.startswith("start éé")
    assert message.endswith("characters cut, the record was over 1 MiB]")
    small = handler.makePickle(_record("small"))
    assert json.loads(small)["msg"] == "small"  # under the cap: untouched


async def test_over_real_tcp_the_cut_record_and_the_next_both_arrive() -> None:
    kept = Kept()
    relay = logs.Relay(kept, lambda _event: None)
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(observe.serve_relay, relay)
            handler = logs.RelayHandler(port, relay.token, "worker-1")
            await anyio.to_thread.run_sync(handler.emit, _record("big " + "y" * (3 << 20)))
            await anyio.to_thread.run_sync(handler.emit, _record("after"))
            with anyio.fail_after(30):  # anti-hang bound only
                while len(kept.records) < 2:
                    await anyio.sleep(0.05)
            handler.close()
            tg.cancel_scope.cancel()
    finally:
        relay.stop()
    big, after = (r.getMessage() for r in kept.records)
    assert big.startswith("big yyy")
    assert "more characters cut" in big
    assert after == "after"


@pytest.mark.slow
async def test_the_runner_prints_a_huge_task_log_line_cut(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    runner = start_runner("--workers", "1", imports=["tests.logging_big_tasks"])
    await runner.started(1)
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add(enqueue(logging_big_tasks.log_a_huge_line, {"mebibytes": 2}))
    await runner.wait_for_log(r"myapp\.big: the line after the huge one")
    line = await runner.wait_for_log(r"myapp\.big: huge-start x+ " + CUT)
    assert "its connection is dropped" not in line  # the supervisor dropped nothing
