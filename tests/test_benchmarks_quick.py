"""The benchmarks' smoke run (`python -m benchmarks --quick`) in the test suite, so CI runs it.

It asserts only that every scenario ran and that every task it queued was processed, never a
speed: figures from a shared CI machine mean nothing, and a test must not depend on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

DRAINED = {"process", "latency", "churn", "unlogged", "retention_cost", "finished_size", "peers"}
"""Scenarios that queue tasks for the runner and wait for every one of them to run."""


@pytest.mark.slow
def test_every_quick_benchmark_runs_and_processes_every_task(db_url: str, tmp_path: Path) -> None:
    # Imported here, not at the top: the benchmarks' hosts need pgserver, which has no wheel
    # for Python 3.13, where this module must still collect (the slow tier never runs there).
    from benchmarks.__main__ import SCENARIOS

    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--results", str(results)],
        cwd=ROOT,
        env={**os.environ, "SQLATASKS_BENCH_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,  # an anti-hang bound; the quick run takes about two minutes
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = {path.stem: json.loads(path.read_text()) for path in results.glob("*.json")}
    assert set(found) == set(SCENARIOS)
    for name, document in found.items():
        assert document["scenario"] == name
        assert document["quick"] is True
        rows: list[dict[str, Any]] = document["rows"]
        assert rows, name
        for row in rows:
            assert row["operations_per_round"] > 0, (name, row["name"])
            assert row["round_seconds"], (name, row["name"])
            assert row["notes"].get("unprocessed tasks", 0) == 0, (name, row["name"])
        checked = [row for row in rows if "unprocessed tasks" in row["notes"]]
        assert checked or name not in DRAINED, f"{name} did not report its unprocessed tasks"
    churn = next(row for row in found["churn"]["rows"] if row["series"])
    assert len(churn["series"]["total_bytes"]) >= 3  # sampled over time
