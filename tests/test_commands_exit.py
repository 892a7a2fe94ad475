"""The operator commands exit non-zero when they did not do what was asked: `cancel`, `show`,
`retry` and `purge` of an id that no task (or no parked task) has (cold review: `cancel` of an
unknown id printed "missing" and exited 0). In process: no subprocess, fast tier."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from sqlatasks import enqueue
from sqlatasks.commands import main
from tests import status_tasks

UNKNOWN = "987654321"


def _run(capsys: pytest.CaptureFixture[str], db_url: str, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--database-url", db_url])
    out, err = capsys.readouterr()
    return code, out, err


def _enqueued(db_url: str) -> int:
    async def add() -> int:
        engine = create_async_engine(db_url)
        async with async_sessionmaker(engine)() as session, session.begin():
            row = enqueue(status_tasks.export, status_tasks.Export(rows=1))
            session.add(row)
            await session.flush()
            task_id = int(row.id)
        await engine.dispose()
        return task_id

    return anyio.run(add)


def test_cancel_of_an_unknown_id_exits_1_and_says_so(
    capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    code, _out, err = _run(capsys, db_url, "cancel", UNKNOWN)
    assert code == 1
    assert f"no task has id {UNKNOWN}" in err
    known = _enqueued(db_url)
    code, out, _err = _run(capsys, db_url, "cancel", str(known))
    assert (code, "deleted" in out) == (0, True)


def test_show_of_an_unknown_id_exits_1(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    code, _out, err = _run(capsys, db_url, "show", UNKNOWN)
    assert code == 1
    assert f"nothing is known of task {UNKNOWN}" in err


@pytest.mark.parametrize(("command", "done"), [("retry", "retried"), ("purge", "deleted")])
def test_retry_and_purge_of_ids_not_parked_exit_1_after_the_count(
    capsys: pytest.CaptureFixture[str], db_url: str, command: str, done: str
) -> None:
    queued = _enqueued(db_url)  # live, not parked: neither retried nor purged
    code, out, err = _run(capsys, db_url, command, UNKNOWN, str(queued), "--json")
    assert code == 1
    assert f'"{done}": 0' in out
    assert "2 of the 2 task ids given were not parked" in err
    code, out, err = _run(capsys, db_url, command, "--all", "--json")  # nothing parked: fine
    assert (code, err) == (0, "")
