"""`python -m benchmarks.charts`: PNG charts from the benchmarks' JSON (needs the `bench` extra).

    python -m benchmarks.charts [--results benchmarks/results] [--out docs/images]

- rates.png: each measured rate as a ratio to its limit (raw asyncpg, or the plain ORM where
  a session is the way in), with the issue's target marked;
- latency.png: the pickup latency distribution, NOTIFY against polling;
- churn.png: table, index and total size, and dead row versions, over the churn run;
- peers.png: no-op tasks drained per second by the raw loop, the runner at its shapes, and
  pgqueuer and procrastinate at each of their settings, from one run (`peers`);
- hosts.png: tasks/s drained by 1-8 runner hosts against one PostgreSQL, and the CPU cores
  PostgreSQL and the whole machine used meanwhile (`python -m benchmarks hosts`).

A chart whose scenario has no JSON yet is skipped, with a line saying so.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from benchmarks import report

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"

# (scenario, row name starts with, baseline starts with, label, target ratio or None)
RATIOS: tuple[tuple[str, str, str, str, float | None], ...] = (
    ("enqueue_single", "sqlatasks session.add", "plain ORM", "enqueue()\nvs plain ORM", 0.8),
    (
        "enqueue_single",
        "business: Order + enq",
        "business: Order",
        "Order + enqueue()\nvs Order",
        0.7,
    ),
    ("enqueue_bulk", "enqueue_many (generator", "raw asyncpg COPY", "enqueue_many\nvs COPY", 0.5),
    ("process", "sqlatasks runner --burst 1x10", "raw", "runner 1x10\nvs raw", 0.5),
    ("process", "sqlatasks runner --burst 1x100", "raw", "runner 1x100\nvs raw", None),
    ("process", "sqlatasks runner --burst 2x50", "raw", "runner 2x50\nvs raw", 0.5),
    ("depth", "runner 2x50, 1,000,000", "runner 2x50, 10,000", "runner at 1M\nvs at 10k", 0.8),
    ("depth", "runner 2x50, 1,000,000", "raw", "runner at 1M\nvs raw at 1M", None),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.charts", description=__doc__)
    parser.add_argument("--results", type=Path, default=report.RESULTS)
    parser.add_argument("--out", type=Path, default=DOCS_IMAGES)
    args = parser.parse_args(argv)
    found = {path.stem: json.loads(path.read_text()) for path in args.results.glob("*.json")}
    args.out.mkdir(parents=True, exist_ok=True)
    charts = (
        ("rates", _rates),
        ("latency", _latency),
        ("churn", _churn),
        ("peers", _peers),
        ("hosts", _hosts),
    )
    for name, draw in charts:
        path = args.out / f"{name}.png"
        if draw(found, path):
            print(f"  -> {path}")
        else:
            print(f"  {name}.png: no results for it in {args.results}; skipped")
    return 0


def _rates(found: dict[str, Any], path: Path) -> bool:
    bars: list[tuple[str, float, float | None, str]] = []
    for scenario, row, baseline, label, target in RATIOS:
        document = found.get(scenario)
        if document is None:
            continue
        rates = {r["name"]: r["rate_per_second"] for r in document["rows"]}
        for c in document["comparisons"]:
            if c["row"].startswith(row) and c["baseline"].startswith(baseline):
                detail = f"{rates[c['row']]:,.0f}/s of {rates[c['baseline']]:,.0f}/s"
                bars.append((label, c["ratio"], target, detail))
                break
    if not bars:
        return False
    figure, axes = plt.subplots(figsize=(8, 0.8 * len(bars) + 1.2))
    positions = range(len(bars))[::-1]
    for y, (_label, ratio, target, detail) in zip(positions, bars, strict=True):
        met = target is None or ratio >= target
        axes.barh(y, ratio, color="tab:blue" if met else "tab:red", height=0.6)
        axes.text(ratio + 0.02, y, f"{ratio:.2f}  ({detail})", va="center", fontsize=8)
        if target is not None:
            axes.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=2)
    axes.set_yticks(list(positions), [label for label, *_ in bars], fontsize=8)
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xlim(0, 1.6)
    axes.set_xlabel("rate as a ratio to its limit (1.0 = as fast; black tick = the target)")
    axes.set_title("sqlatasks against the limit, same run, same database")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _peers(found: dict[str, Any], path: Path) -> bool:
    document = found.get("peers")
    if document is None:
        return False
    bars = [(r["name"], r["rate_per_second"]) for r in document["rows"]]
    colours = {"raw": "tab:grey", "sqlatasks": "tab:blue"}
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.2))
    positions = range(len(bars))[::-1]
    for y, (name, rate) in zip(positions, bars, strict=True):
        axes.barh(y, rate, color=colours.get(name.split()[0], "tab:orange"), height=0.6)
        axes.text(rate, y, f" {rate:,.0f}/s", va="center", fontsize=8)
    axes.set_yticks(list(positions), [name for name, _ in bars], fontsize=8)
    axes.set_xlabel("no-op tasks drained per second (one run, one database)")
    axes.set_title("sqlatasks beside the raw loop, pgqueuer and procrastinate")
    axes.set_xlim(0, max(rate for _, rate in bars) * 1.25)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _latency(found: dict[str, Any], path: Path) -> bool:
    document = found.get("latency")
    if document is None:
        return False
    figure, axes = plt.subplots(figsize=(8, 4))
    for row in document["rows"]:
        values = sorted(v * 1000 for v in row["series"].get("latency_seconds", []))
        if not values:
            continue
        share = [(i + 1) / len(values) for i in range(len(values))]
        notes = row["notes"]
        label = row["name"].removeprefix("pickup latency, ")
        label += f"  p50 {notes['p50_ms']} ms, p99 {notes['p99_ms']} ms"
        axes.step(values, share, where="post", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("commit to task start (ms, log scale)")
    axes.set_ylabel("share of tasks started")
    axes.axvline(2, color="grey", linestyle=":", linewidth=1)
    axes.axvline(15, color="grey", linestyle=":", linewidth=1)
    axes.set_title("Pickup latency of an idle runner (dotted: the 2 ms p50 and 15 ms p99 targets)")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _churn(found: dict[str, Any], path: Path) -> bool:
    document = found.get("churn")
    if document is None:
        return False
    series = next(row["series"] for row in document["rows"] if row["series"])
    minutes = [s / 60 for s in series["seconds"]]
    figure, sizes = plt.subplots(figsize=(8, 4))
    for key, label in (
        ("total_bytes", "total"),
        ("table_bytes", "table"),
        ("index_bytes", "indexes"),
    ):
        sizes.plot(minutes, [b / 2**20 for b in series[key]], label=f"{label} (MiB)")
    sizes.set_xlabel("minutes at 1,000 tasks/s in and out")
    sizes.set_ylabel("MiB")
    dead = sizes.twinx()
    dead.plot(minutes, series["dead_tuples"], color="grey", linestyle=":", label="dead tuples")
    dead.set_ylabel("dead tuples")
    lines = sizes.get_legend_handles_labels()
    more = dead.get_legend_handles_labels()
    sizes.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    sizes.set_title("The queue table under churn")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _hosts(found: dict[str, Any], path: Path) -> bool:
    document = found.get("hosts")
    if document is None:
        return False
    rows = document["drain"]
    labels = [str(row["hosts"]) for row in rows]
    figure, rate_axes = plt.subplots(figsize=(8, 4))
    rate_axes.bar(labels, [row["rate"] for row in rows], color="tab:blue", label="tasks/s")
    rate_axes.set_xlabel("runner hosts (network namespaces), 1 worker x concurrency 50 each")
    rate_axes.set_ylabel("no-op tasks drained per second")
    cpu_axes = rate_axes.twinx()
    for key, label, style in (
        ("postgres_cpu_cores", "PostgreSQL CPU (cores)", "o-"),
        ("machine_busy_cores", "whole machine busy (cores)", "s--"),
    ):
        cpu_axes.plot(labels, [row[key] for row in rows], style, color="tab:red", label=label)
    cpu_axes.set_ylim(0, max(2.2, float(document.get("cores") or 2) + 0.2))
    cpu_axes.set_ylabel("CPU cores used")
    cpu_axes.legend(fontsize=8, loc="lower right")
    rate_axes.set_title(f"Runner hosts against one PostgreSQL ({document.get('cores')} cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
