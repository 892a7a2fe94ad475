"""libpq's connection parameters that asyncpg has no argument for, in the runner's or a
command's URL, are refused with one line naming them (docs/drivers.md).

Found by a cold review: a hosted PostgreSQL's URL (`?sslmode=require&channel_binding=require`),
or one with `connect_timeout=` or `application_name=`, failed the runner and every command
with `TypeError: connect() got an unexpected keyword argument ...` and a traceback.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from sqlatasks import poolers, settings

ROOT = Path(__file__).resolve().parent.parent
URL = "postgresql://u@127.0.0.1:1/db?sslmode=require"


@pytest.mark.parametrize("key", sorted(poolers.LIBPQ_ONLY))
def test_each_libpq_only_parameter_is_refused_by_name(key: str) -> None:
    with pytest.raises(ValueError, match=f"the URL's {key} is libpq's"):
        settings.connect_url(f"{URL}&{key}=1")


def test_none_of_them_is_an_asyncpg_argument() -> None:
    # The list refuses only what asyncpg.connect() would fail on with a TypeError.
    accepted = set(inspect.signature(asyncpg.connect).parameters)
    assert not poolers.LIBPQ_ONLY & accepted


def test_what_asyncpg_takes_passes() -> None:
    url = settings.connect_url(f"{URL}&target_session_attrs=read-write&command_timeout=5")
    assert url.startswith("postgresql+asyncpg://")
    assert "ssl=require" in url
    assert "target_session_attrs=read-write" in url


def test_wait_for_s_url_keeps_them() -> None:
    # wait_for() turns the application's engine URL into an asyncpg DSN, where asyncpg sends
    # an unknown parameter such as application_name as a server setting: not refused there.
    assert "application_name=web" in settings.database_url(f"{URL}&application_name=web")


@pytest.mark.slow
@pytest.mark.parametrize("module", ["sqlatasks", "sqlatasks.runner"])
def test_the_runner_and_the_cli_say_it_in_one_line(module: str) -> None:
    command = ["status"] if module == "sqlatasks" else ["--import", "tests.runner_tasks"]
    url = f"{URL}&channel_binding=require"
    done = subprocess.run(
        [sys.executable, "-m", module, "--database-url", url, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "channel_binding is libpq's" in done.stderr
    assert "Traceback" not in done.stderr
