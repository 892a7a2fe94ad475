"""What a worker knows of the queue settings every runner obeys, and the claims they call for.

The settings live in the database (`sqlatasks_queues`, written by `sqlatasks.operations`);
each worker re-reads them once per idle sleep, so a change reaches every runner within one
idle sleep, with no restart. The limits themselves are checked by the database at each claim
(`sql.claim`), under a lock per queue, so that runners never add up past them; what a worker
caches decides only which statement it issues:

    no settings          the plain claim, unchanged
    a queue with some    claimed alone, within the room the database gives it
    a paused queue       not claimed at all (the database would give it no room either)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks import rows
from sqlatasks.sql import claim as sql


@dataclass(frozen=True, slots=True)
class Step:
    """One claim statement: from `queues` (empty: every queue but `excluded`), or from the one
    queue `limited`, within its room."""

    queues: Sequence[str]
    excluded: Sequence[str] = ()
    limited: str | None = None


class QueueSettings:
    """The queue settings as this worker last read them."""

    def __init__(self, refresh_every: float) -> None:
        self._refresh_every = refresh_every
        self._read_at = -float("inf")
        self._settings: dict[str, rows.QueueSettings] = {}

    async def refresh(self, conn: AsyncConnection) -> None:
        """Re-read the settings if they are older than the refresh period."""
        if anyio.current_time() - self._read_at < self._refresh_every:
            return
        self._settings = {s.queue: s for s in await sql.queue_settings(conn)}
        self._read_at = anyio.current_time()

    def steps(self, queues: Sequence[str]) -> list[Step]:
        """The claim statements that cover `queues` (empty: every queue), in order: each queue
        with settings alone first (their room is scarce), then the rest in one statement."""
        if not self._settings:
            return [Step(queues)]
        named = self._settings if not queues else [q for q in queues if q in self._settings]
        steps = [Step((), limited=q) for q in named if not self._settings[q].paused]
        if not queues:
            steps.append(Step((), excluded=sorted(self._settings)))
        else:
            rest = [q for q in queues if q not in self._settings]
            if rest:
                steps.append(Step(rest))
        return steps

    def idle_sleep(self, idle_sleep: float, queues: Sequence[str]) -> float:
        """The wait after a claim that left slots free: a rate-limited queue may start its
        next task before the idle sleep is over, so look again at its pace."""
        rates = [
            s.per_second
            for s in self._settings.values()
            if s.per_second is not None and not s.paused and (not queues or s.queue in queues)
        ]
        return min([idle_sleep, *(1 / rate for rate in rates)])
