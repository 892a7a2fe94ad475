"""Sessions: tests (the default), lint, demo, bench, soak."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.needs_version = ">=2025.02.09"  # nox.project.dependency_groups (PEP 735)

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    """A development dependency group of pyproject.toml (not published with the package)."""
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against a real PostgreSQL (throwaway unless SQLATASKS_TEST_DATABASE_URL)."""
    session.install("-e", ".[embedded,web,psycopg,dashboard,uvloop,otel]", *_group("test"))
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and mypy --strict on the package and its tests."""
    session.install("-e", ".[embedded,web,dashboard,uvloop,otel]", *_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "sqlatasks", "tests")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job, end to end (throwaway database unless SQLATASKS_DATABASE_URL)."""
    session.install("-e", ".[embedded]")
    session.run("python", "-m", "examples.demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, as ratios to raw asyncpg (a throwaway database unless SQLATASKS_BENCH_…).

    `nox -s bench -- --quick` for a smoke run; name scenarios to run only those. A full run
    also redraws the charts in docs/images from benchmarks/results.
    """
    session.install("-e", ".[embedded,psycopg]", *_group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)
    if "--quick" not in session.posargs:
        session.run("python", "-m", "benchmarks.charts")


@nox.session
def soak(session: nox.Session) -> None:
    """Faults and a PostgreSQL restart under a steady mixed load; `-- --minutes 5`."""
    session.install("-e", ".[embedded,web,psycopg]", *_group("test"))
    session.run("python", "-m", "tests.chaos.soak", *session.posargs)
