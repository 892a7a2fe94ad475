"""Never to be imported by a runner: importing it leaves a mark."""

import os
from pathlib import Path

Path(os.environ["SQLATASKS_TEST_LEDGER"], "forbidden-imported").touch()


async def boom(data: object) -> None:
    raise AssertionError("a forbidden task ran")
