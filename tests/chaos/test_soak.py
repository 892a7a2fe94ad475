"""A short run of the soak (tests/chaos/soak.py): the same code as `nox -s soak`."""

from __future__ import annotations

from pathlib import Path

from tests.chaos import soak
from tests.chaos.cluster import own_cluster


async def test_a_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    with own_cluster() as cluster:
        figures = await soak.soak(cluster, tmp_path, seconds=45, rate=60, seed=7)
    print("\n".join(soak.report(figures)))
    figures.verdict.assert_ok()
    assert figures.verdict.completed > 1000
    assert sum(figures.faults.values()) >= 4
    assert any(kind.startswith("postgres restart") for kind in figures.faults)
