from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos.harness import Chaos

pytestmark = pytest.mark.slow


@pytest.fixture
async def chaos(db_url: str, tmp_path: Path) -> AsyncIterator[Chaos]:
    run = Chaos(db_url, tmp_path)
    yield run
    await run.close()
