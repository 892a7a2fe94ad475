"""Timing, and memory: every variant warmed up, then timed in interleaved rounds; the median counts.

The variants take turns (in alternating order, and in slices of a round if asked), so slow
drift or a burst of load on the machine (another process, a checkpoint, autovacuum, a noisy
neighbour on a VM) falls on every variant alike instead of on whichever runs at that moment.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Work = Callable[[int], Awaitable[None]]
"""Does `n` operations: n transactions, or one transaction of n rows, as the scenario says."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of doing the work, and the rows whose rates it is to be compared with."""

    name: str
    work: Work
    operations: int
    """Operations per measured round."""
    warmup: int
    """Operations done once, untimed, before the first round."""
    baselines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    """One result row: `operations` done in each round, in `round_seconds`."""

    name: str
    operations: int
    round_seconds: tuple[float, ...]
    baselines: tuple[str, ...] = ()
    """Names of rows in the same result that this one is compared with."""
    notes: Mapping[str, float | str] = field(default_factory=dict)
    round_cpu_seconds: tuple[float, ...] = ()
    """This process's CPU time in each round: the client's own cost, without waits for the
    server and (mostly) without time stolen by other processes or a VM's neighbours."""
    series: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Raw samples for the charts (latencies, sizes over time), by name."""

    @property
    def seconds(self) -> float:
        return statistics.median(self.round_seconds)

    @property
    def rate(self) -> float:
        """Operations per second in the median round."""
        return self.operations / self.seconds

    @property
    def best_rate(self) -> float:
        """Operations per second in the fastest round."""
        return self.operations / min(self.round_seconds)

    @property
    def micros_per_operation(self) -> float:
        return self.seconds / self.operations * 1e6

    @property
    def cpu_micros_per_operation(self) -> float | None:
        if not self.round_cpu_seconds:
            return None
        return statistics.median(self.round_cpu_seconds) / self.operations * 1e6

    @property
    def spread(self) -> float:
        """(slowest - fastest round) / median round: how noisy the measurement was."""
        return (max(self.round_seconds) - min(self.round_seconds)) / self.seconds


async def measure(
    variants: Sequence[Variant],
    *,
    rounds: int,
    reset: Callable[[], Awaitable[None]],
    slices: int = 1,
) -> list[Row]:
    """Warm each variant up, then time `rounds` rounds of each; `reset()` runs before each part.

    With `slices` > 1 a round's operations are done in that many parts, and the variants take
    turns part by part: a burst of load from elsewhere then falls on all of them, not on one.
    """
    for variant in variants:
        await reset()
        await variant.work(variant.warmup)
    times: dict[str, list[float]] = {variant.name: [] for variant in variants}
    cpu_times: dict[str, list[float]] = {variant.name: [] for variant in variants}
    for _ in range(rounds):
        spent = dict.fromkeys(times, 0.0)
        cpu_spent = dict.fromkeys(times, 0.0)
        for part in range(slices):
            ordered = variants if part % 2 == 0 else list(reversed(variants))
            for variant in ordered:
                await reset()
                start, cpu_start = time.perf_counter(), time.process_time()
                await variant.work(_share(variant.operations, slices, part))
                spent[variant.name] += time.perf_counter() - start
                cpu_spent[variant.name] += time.process_time() - cpu_start
        for name in times:
            times[name].append(spent[name])
            cpu_times[name].append(cpu_spent[name])
    await reset()
    return [
        Row(
            name=variant.name,
            operations=variant.operations,
            round_seconds=tuple(times[variant.name]),
            baselines=variant.baselines,
            round_cpu_seconds=tuple(cpu_times[variant.name]),
        )
        for variant in variants
    ]


def _share(total: int, parts: int, part: int) -> int:
    """Part `part` of `total` split into `parts` near-equal whole shares."""
    return total * (part + 1) // parts - total * part // parts


def memory_mark() -> float:
    """The resident set now, in MiB; on Linux the peak count also restarts from here."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
    return _status_mib("VmRSS", default=_max_rss_mib())


def memory_peak() -> float:
    """The peak resident set in MiB since the last `memory_mark()`.

    Where the peak cannot be restarted (not Linux) it counts from the process's start, so only
    a rise above every earlier peak shows.
    """
    return _status_mib("VmHWM", default=_max_rss_mib())


def _status_mib(field: str, *, default: float) -> float:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return default
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return default


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
