"""Configuration: flag beats environment beats default; bad values fail at start, in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sqlatasks import ConfigurationError
from sqlatasks.settings import Settings
from tests.conftest import ROOT

URL = "postgresql+asyncpg://u:p@db.example:5432/app"


def run_runner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SQLATASKS_")}
    return subprocess.run(
        [sys.executable, "-m", "sqlatasks.runner", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLATASKS_DATABASE_URL", URL)
    monkeypatch.setenv("SQLATASKS_WORKERS", "7")
    monkeypatch.setenv("SQLATASKS_IMPORTS", "a.tasks, b.tasks")
    monkeypatch.setenv("SQLATASKS_NOTIFY", "false")
    settings = Settings.load(workers="3", concurrency=None)
    assert settings.workers == 3  # flag
    assert settings.imports == ("a.tasks", "b.tasks")  # environment, comma-separated
    assert settings.notify is False
    assert settings.concurrency == 10  # default
    with pytest.raises(Exception, match="frozen"):
        settings.workers = 4  # type: ignore[misc]


def test_plain_postgresql_urls_are_mapped_to_asyncpg() -> None:
    settings = Settings.load(database_url="postgresql://u@localhost/app")
    assert settings.database_url == "postgresql+asyncpg://u@localhost/app"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"workers": 0}, "invalid --workers (SQLATASKS_WORKERS): Input should be greater"),
        ({"task_timeout": -1}, "invalid --task-timeout"),
        ({"idle_sleep": "soon"}, "invalid --idle-sleep"),
        ({"database_url": "mysql://x/y"}, "needs PostgreSQL through asyncpg"),
        ({"database_url": "not a url"}, "not a database URL"),
        ({"log_level": "chatty"}, "invalid --log-level"),
    ],
)
def test_invalid_values_name_the_setting(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(**{"database_url": URL, **override})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "invalid --workers (SQLATASKS_WORKERS)"),
        (["--task-timeout", "-1"], "invalid --task-timeout"),
        (["--database-url", "mysql://x/y"], "needs PostgreSQL through asyncpg"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--import", "no_such_module_here"], "cannot import 'no_such_module_here'"),
    ],
)
def test_runner_bad_start_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = run_runner(*args, env={"SQLATASKS_DATABASE_URL": URL})
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_runner_without_a_database_says_how_to_give_one() -> None:
    done = run_runner()
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "python -m sqlatasks.runner: --database-url (SQLATASKS_DATABASE_URL) is required"
    )


def test_help_gives_units_and_defaults() -> None:
    done = run_runner("--help")
    assert done.returncode == 0
    help_text = " ".join(done.stdout.split())
    assert "--workers WORKERS worker processes per runner (default 2)" in help_text
    assert "--task-timeout TIMEOUT seconds an attempt may run" in help_text
    assert "[s] (default 300.0)" in help_text
    for flag in [
        "--concurrency",
        "--retry-delay",
        "--check-interval",
        "--idle-sleep",
        "--import",
        "--queue",
        "--burst",
        "--shutdown-timeout",
        "--log-level",
        "--database-url",
        "--no-notify",
    ]:
        assert flag in help_text
