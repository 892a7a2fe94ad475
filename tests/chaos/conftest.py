"""Every chaos test starts runners through `chaos` (or `on_cluster`, on a cluster it owns), so
the `start_runner` fixture requires each to be marked slow: its module sets `pytestmark`
(a `pytestmark` here, in a conftest, would mark nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.chaos.harness import Chaos
from tests.processes import Runners


@pytest.fixture
async def chaos(db_url: str, start_runner: Runners) -> AsyncIterator[Chaos]:
    run = Chaos(db_url, start_runner)
    yield run
    await run.close()
