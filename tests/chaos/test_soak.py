"""A short run of the soak (tests/chaos/soak.py): the same code as `nox -s soak`."""

from __future__ import annotations

import pytest

from tests.chaos import soak
from tests.chaos.cluster import own_cluster
from tests.processes import Runners

pytestmark = pytest.mark.slow


async def test_a_short_soak_keeps_every_invariant(start_runner: Runners) -> None:
    with own_cluster() as cluster:
        figures = await soak.soak(cluster, start_runner, seconds=45, rate=60, seed=7)
    print("\n".join(soak.report(figures)))
    figures.verdict.assert_ok()
    assert figures.verdict.completed > 1000
    assert sum(figures.faults.values()) >= 4
    assert any(kind.startswith("postgres restart") for kind in figures.faults)
