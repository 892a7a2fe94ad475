"""The overview's throughput chart: inline SVG built on the server, no script, no library.

Completed attempts per minute as bars, failed (parked) ones stacked on top in red, over the
last hour; the totals as text beside it, and in the SVG's title and description for screen
readers (WAI-ARIA `role="img"` with `aria-labelledby`, https://www.w3.org/TR/svg-aam-1.0/).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlatasks.webui.html import esc, number

BAR = 10
"""Pixels per minute (a bar and its gap)."""
HEIGHT = 100
"""Pixels of the tallest bar."""
KEY = '<i class="key %s" aria-hidden="true"></i>'
"""The legend's colour swatch (decorative: the words say what it means)."""


def per_minute(now: datetime, rows: Iterable[Any], minutes: int) -> list[tuple[datetime, int, int]]:
    """(minute, completed, failed) for each of the last `minutes` minutes up to `now`, oldest
    first, every queue together; a minute without rows counts zero."""
    start = now - timedelta(minutes=minutes - 1)
    slots = {start + timedelta(minutes=i): [0, 0] for i in range(minutes)}
    for row in rows:
        slot = slots.get(row.minute)
        if slot is not None:
            slot[0] += int(row.completed)
            slot[1] += int(row.failed)
    return [(minute, c, f) for minute, (c, f) in slots.items()]


def per_queue(rows: Iterable[Any]) -> dict[str, tuple[int, int, int]]:
    """Per queue: completed, failed (parked) and retried over the rows given."""
    totals: dict[str, tuple[int, int, int]] = {}
    for row in rows:
        c, f, r = totals.get(row.queue, (0, 0, 0))
        totals[row.queue] = (c + int(row.completed), f + int(row.failed), r + int(row.retried))
    return totals


def figure(now: datetime, rows: Sequence[Any], minutes: int) -> str:
    """The chart and its totals, as one `<figure id="throughput">`."""
    series = per_minute(now, rows, minutes)
    queues = list(per_queue(rows).values())
    completed, failed, retried = (sum(q[i] for q in queues) for i in range(3))
    summary = (
        f"Last {minutes} minutes: {completed} completed, {failed} failed (parked), "
        f"{retried} retried"
    )
    top = max((c + f for _, c, f in series), default=0) or 1
    bars = "".join(_bars(i, minute, c, f, top) for i, (minute, c, f) in enumerate(series))
    width = BAR * minutes
    svg = (
        f'<svg role="img" aria-labelledby="throughput-title throughput-desc" width="{width}" '
        f'height="{HEIGHT + 16}" viewBox="0 0 {width} {HEIGHT + 16}">'
        f'<title id="throughput-title">Attempts per minute, last {minutes} minutes</title>'
        f'<desc id="throughput-desc">{esc(summary)}; the busiest minute had {top}.</desc>'
        f'<line x1="0" y1="{HEIGHT}" x2="{width}" y2="{HEIGHT}" class="axis"/>{bars}'
        f'<text x="0" y="{HEIGHT + 13}">{minutes} min ago</text>'
        f'<text x="{width}" y="{HEIGHT + 13}" text-anchor="end">now</text>'
        f'<text x="2" y="10">{top}/min</text></svg>'
    )
    caption = (
        f"<figcaption>Last {minutes} minutes: "
        f'{KEY % "done"}<span id="throughput-completed">{number(completed)}</span> completed, '
        f"{KEY % 'bad'}"
        f'<span id="throughput-failed" class="failed">{number(failed)}</span> failed (parked), '
        f'<span id="throughput-retried">{number(retried)}</span> retried.</figcaption>'
    )
    return f'<figure id="throughput" class="chart">{svg}{caption}</figure>'


def _bars(index: int, minute: datetime, completed: int, failed: int, top: int) -> str:
    if not completed and not failed:
        return ""
    x, done, bad = index * BAR, HEIGHT * completed / top, HEIGHT * failed / top
    tip = f"{minute.astimezone(UTC):%H:%M} UTC: {completed} completed, {failed} failed"
    return (
        f"<g><title>{esc(tip)}</title>"
        f'<rect class="done" x="{x}" y="{HEIGHT - done:.1f}" width="{BAR - 2}" '
        f'height="{done:.1f}"/>'
        f'<rect class="bad" x="{x}" y="{HEIGHT - done - bad:.1f}" width="{BAR - 2}" '
        f'height="{bad:.1f}"/></g>'
    )
