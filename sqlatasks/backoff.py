"""Waiting longer after each failure, for every loop that retries (claim, ack, listen, tick,
restart, reach the database)."""

from __future__ import annotations


class Backoff:
    """Delays that double from `first` up to `most` seconds; `reset()` after a success.

    >>> b = Backoff(first=0.5, most=2.0)
    >>> [b.next() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    """

    def __init__(self, *, first: float, most: float) -> None:
        self._first = first
        self._most = most
        self._delay = first

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long, up to `most`."""
        delay = self._delay
        self._delay = min(delay * 2, self._most)
        return delay

    def reset(self) -> None:
        self._delay = self._first
