"""An id no task can have (past PostgreSQL's bigint) is refused with a sentence saying so, by the
operator functions, the command line's arguments and the dashboard, instead of the driver's
raw DBAPIError (cold review). The id just inside the range is an ordinary unknown id."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import InvalidOption, get_task, operations
from sqlatasks.arguments import build_parser
from sqlatasks.dashboard import create_app

pytestmark = pytest.mark.anyio

TOO_BIG, TOO_SMALL, LARGEST = 2**70, -(2**63) - 1, 2**63 - 1

Call = Callable[[AsyncSession, int], Awaitable[Any]]
CALLS: list[tuple[str, Call]] = [
    ("get_task()", lambda s, i: get_task(s, i)),
    ("cancel()", lambda s, i: operations.cancel(s, i)),
    ("retry_failed()", lambda s, i: operations.retry_failed(s, [1, i])),
    ("delete_failed()", lambda s, i: operations.delete_failed(s, [i])),
]


@pytest.mark.parametrize(("where", "call"), CALLS, ids=[w for w, _ in CALLS])
@pytest.mark.parametrize("task_id", [TOO_BIG, TOO_SMALL])
async def test_the_operator_functions_refuse_an_id_past_bigint(
    session: AsyncSession, where: str, call: Call, task_id: int
) -> None:
    with pytest.raises(InvalidOption, match=r"bigint") as raised:
        await call(session, task_id)
    assert str(raised.value).startswith(f"{where}: ")
    assert str(task_id) in str(raised.value)
    assert raised.value.option == "task_id"


async def test_the_largest_bigint_is_an_ordinary_unknown_id(session: AsyncSession) -> None:
    assert await get_task(session, LARGEST) is None
    assert await operations.cancel(session, LARGEST) == "missing"
    assert await operations.retry_failed(session, [LARGEST]) == 0


@pytest.mark.parametrize("command", ["show", "cancel", "retry", "purge"])
@pytest.mark.parametrize("given", [str(TOO_BIG), str(TOO_SMALL)])
def test_the_command_line_refuses_it_as_an_argument_error(
    capsys: pytest.CaptureFixture[str], command: str, given: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser("sqlatasks").parse_args([command, given])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument ID: task ids are PostgreSQL bigint" in err
    assert "Traceback" not in err
    assert build_parser().parse_args([command, str(LARGEST)]) is not None  # in range: fine


async def test_the_dashboard_shows_nothing_known_and_refuses_actions(engine: AsyncEngine) -> None:
    app = create_app(engine, allow_actions=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        page = await c.get(f"/task/{TOO_BIG}")
        assert page.status_code == 404
        assert "Nothing is known of task" in page.text
        found = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/")).text)
        assert found
        form = {"csrf": found.group(1), "id": str(TOO_BIG)}
        cancelled = await c.post("/actions/cancel", data=form)
        assert (cancelled.status_code, "bigint" in cancelled.text) == (400, True)
        retried = await c.post("/actions/retry", data={"csrf": found.group(1), "ids": TOO_BIG})
        assert (retried.status_code, "bigint" in retried.text) == (400, True)
