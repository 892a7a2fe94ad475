"""The rows of one `enqueue_many` batch sent by COPY, validated and counted as the driver reads
them (the batch is never held in memory whole)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlatasks import errors, rows, tasks


class Records:
    """A batch's COPY rows, validated and counted as the driver reads them."""

    def __init__(
        self,
        task: tasks.Task[Any],
        batch: rows.Batch,
        payloads: Iterable[Any],
    ) -> None:
        self._task = task
        self._fixed = (batch.task_name, batch.queue, batch.priority, batch.max_attempts)
        self._traced = () if batch.trace_context is None else (batch.trace_context,)
        self._payloads = payloads
        self.count = 0

    def __call__(self, scheduled_at: datetime | None) -> Iterator[tuple[Any, ...]]:
        # In the order of sql.enqueue's columns: then scheduled_at, then trace_context.
        tail = (*(() if scheduled_at is None else (scheduled_at,)), *self._traced)
        for payload in self._payloads:
            self.count += 1
            try:
                text = self._task.dump(payload)
            except errors.PayloadError as exc:
                exc.add_note(
                    f"enqueue_many: payload {self.count} (counting from 1) aborted the COPY, "
                    "and with it the transaction; roll it back"
                )
                raise
            yield (*self._fixed, text, *tail)
