"""`python -m benchmarks [--quick] [--durable] [scenario ...]`: run, print tables, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import (
    churn,
    database,
    depth,
    enqueue_bulk,
    enqueue_drivers,
    enqueue_single,
    finished_size,
    flow_cost,
    hosts,
    latency,
    measure,
    notify_cost,
    observe_cost,
    peers,
    process,
    report,
    retention_cost,
    rollup_cost,
    unique_cost,
    unlogged,
)
from sqlatasks import errors

Scenario = Callable[[str, bool], Coroutine[Any, Any, list[measure.Row]]]
"""`run(url, quick)`: measure against the database at `url`; fewer operations when quick."""

SCENARIOS: dict[str, Scenario] = {
    "enqueue_single": enqueue_single.run,
    "enqueue_bulk": enqueue_bulk.run,
    "enqueue_drivers": enqueue_drivers.run,
    "process": process.run,
    "latency": latency.run,
    "notify_cost": notify_cost.run,
    "depth": depth.run,
    "churn": churn.run,
    "unlogged": unlogged.run,
    "unique_cost": unique_cost.run,
    "flow_cost": flow_cost.run,
    "retention_cost": retention_cost.run,
    "finished_size": finished_size.run,
    "observe_cost": observe_cost.run,
    "rollup_cost": rollup_cost.run,
    "peers": peers.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer operations, for a smoke run")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="keep the server's synchronous_commit (default: off for the benchmark database)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=report.RESULTS,
        help="folder for the JSON files (default: benchmarks/results)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=finished_size.MINUTES,
        help=f"how long finished_size churns (default {finished_size.MINUTES:g})",
    )
    parser.add_argument(
        "scenario",
        nargs="*",
        help=f"any of {', '.join(SCENARIOS)} (default: all); or `hosts` (alias `scale`), "
        "alone: runners in network namespaces against a server of its own (root)",
    )
    args = parser.parse_args(argv)
    if set(args.scenario) & {"hosts", "scale"}:
        found = hosts.main(args.quick)
        args.results.mkdir(parents=True, exist_ok=True)
        path = args.results / ("hosts-quick.json" if args.quick else "hosts.json")
        path.write_text(json.dumps(found, indent=2) + "\n")
        print(f"  -> {path}")
        return 0
    unknown = [name for name in args.scenario if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    names: list[str] = args.scenario or list(SCENARIOS)
    try:
        with database.provisioned() as (url, label):
            facts = {
                "database": label,
                **database.prepare(url, durable=args.durable),
                **report.environment(),
            }
            for name in names:
                scenario = SCENARIOS[name]
                if name == "finished_size":
                    scenario = partial(finished_size.run, minutes=args.minutes)
                rows = asyncio.run(scenario(url, args.quick))
                report.print_table(name, rows, quick=args.quick, facts=facts)
                path = report.write_json(
                    name, rows, quick=args.quick, facts=facts, folder=args.results
                )
                print(f"  -> {path}")
    except (errors.SqlatasksError, ValueError) as exc:
        parser.exit(2, f"benchmarks: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
