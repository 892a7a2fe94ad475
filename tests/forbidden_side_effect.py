"""Never to be imported by a runner: importing it leaves a mark in the ledger."""

from tests import ledger

ledger.write("forbidden module imported")


async def boom(data: object) -> None:
    raise AssertionError("a forbidden task ran")
