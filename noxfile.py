"""Sessions: tests (the default), tests-3.12 and tests-3.13, lint, demo, bench, soak."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


# On another Python: the fast tier, then a few tests that start processes (the runner, its
# signals, a task's timeout and cancel, the relayed logs, the console script, a psycopg URL).
OTHER_PYTHON_SLOW = [
    "tests/test_runner.py::test_burst_runs_everything_then_exits",
    "tests/test_runner.py::test_timeout_cancels_the_task",
    "tests/test_runner.py::test_sigterm_lets_tasks_finish_and_exits_0",
    "tests/test_runner.py::test_cancel_interrupts_a_running_task_and_deletes_it",
    "tests/test_logging.py::test_dict_config_at_import_json_lines_carry_the_task",
    "tests/test_commands.py::test_the_console_script_is_the_command_line",
    "tests/test_drivers.py::test_runner_with_a_psycopg_url_runs_tasks",
]


def _tests_on(version: str, *, embedded: bool) -> None:
    @nox.session(python=version, name=f"tests-{version}")
    def session_on(session: nox.Session) -> None:
        extras = (
            "embedded,web,psycopg,dashboard,uvloop" if embedded else "web,psycopg,dashboard,uvloop"
        )
        session.install("-e", f".[{extras}]", *_group("test"))
        runs = [session.posargs] if session.posargs else [["-m", "not slow"], OTHER_PYTHON_SLOW]
        with contextlib.ExitStack() as stack:
            env = {}
            if not (embedded or os.environ.get("SQLATASKS_TEST_DATABASE_URL")):
                url = stack.enter_context(_server_from_the_embedded_wheel(session))
                env["SQLATASKS_TEST_DATABASE_URL"] = url
            for args in runs:
                session.run("pytest", *args, env=env)

    session_on.__doc__ = (
        f"The fast tier and a few runner tests (OTHER_PYTHON_SLOW) on Python {version}"
        + ("" if embedded else ", against a throwaway server (no pgserver wheel here)")
    )


_tests_on("3.12", embedded=True)  # pgserver has wheels for 3.11 and 3.12
_tests_on("3.13", embedded=False)  # none for 3.13 (yet): a server started by nox's own Python


@contextlib.contextmanager
def _server_from_the_embedded_wheel(session: nox.Session) -> Iterator[str]:
    """A throwaway PostgreSQL from the pgserver wheel, installed for the Python that runs nox
    (a venv of its own, .nox/embedded-server), so that a session on a Python without that
    wheel still tests against a real server; yields its URL, stops it at the end."""
    home = Path(".nox/embedded-server")
    python = home / "bin" / "python"
    if not python.exists():
        session.log(f"creating {home} with {sys.executable} for the embedded PostgreSQL")
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", ".[embedded]"], check=True)
    server = subprocess.Popen(
        [str(python), "-m", "tests.serve_postgres"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        url = server.stdout.readline().strip()
        if not url:
            session.error("the embedded PostgreSQL did not start (see above)")
        session.log(f"PostgreSQL from the embedded wheel at {url}")
        yield url
    finally:
        server.stdin.close()  # the server's cue to stop and delete its data folder
        server.wait(timeout=120)


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
