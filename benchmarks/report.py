"""Results out: a table on stdout, and benchmarks/results/<scenario>.json."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.measure import Row

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("sqlatasks", "sqlalchemy", "asyncpg", "pydantic")


@dataclass(frozen=True, slots=True)
class Comparison:
    row: str
    baseline: str
    ratio: float
    """The row's rate divided by the baseline's: 1.0 is as fast, 0.5 half as fast."""
    delta_micros: float
    """Extra time per operation over the baseline, in microseconds."""


def comparisons(rows: Sequence[Row]) -> list[Comparison]:
    by_name = {row.name: row for row in rows}
    return [
        Comparison(
            row=row.name,
            baseline=name,
            ratio=row.rate / by_name[name].rate,
            delta_micros=row.micros_per_operation - by_name[name].micros_per_operation,
        )
        for row in rows
        for name in row.baselines
    ]


def environment() -> dict[str, str]:
    """Versions of what is being measured, for the JSON."""
    facts = {"python": platform.python_version(), "machine": platform.machine()}
    for package in PACKAGES:
        facts[package] = metadata.version(package)
    return facts


def print_table(
    scenario: str, rows: Sequence[Row], *, quick: bool, facts: Mapping[str, str]
) -> None:
    rounds = max(len(row.round_seconds) for row in rows)
    server = ", ".join(
        f"{k}={facts[k]}"
        for k in ("fsync", "synchronous_commit", "autovacuum", "shared_buffers")
        if k in facts
    )
    print(f"\n{scenario}  ({'quick' if quick else 'full'} run, median of {rounds} rounds)")
    print(
        f"  {facts.get('database', '?')}; PostgreSQL {facts.get('server_version', '?')}, {server}"
    )
    found = comparisons(rows)
    header = (
        "measurement",
        "ops/round",
        "rate/s",
        "µs/op",
        "cpu µs/op",
        "spread",
        "ratio to baseline",
    )
    lines = [header]
    for row in rows:
        mine = [c for c in found if c.row == row.name]
        ratios = [f"{c.ratio:.3f}x {c.baseline} ({c.delta_micros:+.1f} µs/op)" for c in mine]
        cpu = row.cpu_micros_per_operation
        lines.append(
            (
                row.name,
                f"{row.operations:,}",
                f"{row.rate:,.0f}",
                f"{row.micros_per_operation:.1f}",
                "-" if cpu is None else f"{cpu:.1f}",
                f"{row.spread:.1%}",
                ratios[0] if ratios else "baseline",
            )
        )
        lines.extend(("", "", "", "", "", "", ratio) for ratio in ratios[1:])
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    for line in lines:
        name, *numbers, ratio = line
        cells = [name.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(numbers, widths[1:], strict=True)]
        print("  " + "  ".join([*cells, ratio]).rstrip())
    print(
        "  (rate: median round; cpu: this process's CPU time; spread: (slowest - fastest) / "
        "median round; ratio: rate / baseline's rate)"
    )
    for row in rows:
        for key, value in row.notes.items():
            shown = f"{value:,.1f}" if isinstance(value, float) else value
            print(f"  {row.name}: {key} = {shown}")


def write_json(
    scenario: str,
    rows: Sequence[Row],
    *,
    quick: bool,
    facts: Mapping[str, str],
    folder: Path = RESULTS,
) -> Path:
    document: dict[str, Any] = {
        "scenario": scenario,
        "quick": quick,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": dict(facts),
        "rows": [
            {
                "name": row.name,
                "operations_per_round": row.operations,
                "round_seconds": list(row.round_seconds),
                "median_seconds": row.seconds,
                "rate_per_second": row.rate,
                "best_rate_per_second": row.best_rate,
                "micros_per_operation": row.micros_per_operation,
                "round_cpu_seconds": list(row.round_cpu_seconds),
                "cpu_micros_per_operation": row.cpu_micros_per_operation,
                "spread": row.spread,
                "notes": dict(row.notes),
                "series": {name: list(values) for name, values in row.series.items()},
            }
            for row in rows
        ],
        "comparisons": [
            {
                "row": c.row,
                "baseline": c.baseline,
                "ratio": c.ratio,
                "delta_micros_per_operation": c.delta_micros,
            }
            for c in comparisons(rows)
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scenario}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
