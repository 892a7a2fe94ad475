"""A PostgreSQL cluster a test owns, so it may restart it: pgserver's bundled binaries, a
fresh data folder in a temporary directory, a unix socket, the schema from `alembic upgrade
head`."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlatasks import settings
from tests.conftest import alembic


@dataclass
class Cluster:
    server: Any
    url: str

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m fast|immediate`: every connection is cut; waits until it is up."""
        from pgserver import _commands

        commands: Any = _commands  # pg_ctl and the other commands are made at import
        commands.pg_ctl(
            ["-w", "-m", mode, "-l", str(self.server.log), "restart"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )


@contextmanager
def own_cluster() -> Iterator[Cluster]:
    from pgserver.postgres_server import get_server

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    folder = Path(tempfile.mkdtemp(prefix="sqlatasks-chaos-pg-"))
    try:
        server = get_server(folder, cleanup_mode="stop")
        try:
            url = settings.database_url(server.get_uri())
            done = alembic(url, "upgrade", "head")
            assert done.returncode == 0, done.stderr
            yield Cluster(server, url)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
