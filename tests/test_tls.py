"""TLS: a libpq `?sslmode=` in the URL (what hosted PostgreSQL URLs carry) works for the runner
and the command line, which connect through asyncpg (docs/drivers.md).

A PostgreSQL of its own, Debian's build (the pgserver wheel's has no TLS), listening on
127.0.0.1 with a self-signed certificate and `log_connections`: its log says, per connection,
whether TLS was used.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from sqlatasks import enqueue_many, settings
from tests import ledger
from tests.conftest import ROOT
from tests.processes import Runners
from tests.runner_tasks import Job, record

# anyio marked here, not only by conftest after collection, so the parameters are kept.
pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TlsServer:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.log = folder / "server.log"

    def url(self, driver: str, sslmode: str) -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/postgres?sslmode={sslmode}"

    def connections(self) -> list[str]:
        """The log's 'connection authorized' lines of sqlatasks' own connections."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if "connection authorized" in line]


def _binaries() -> Path | None:
    """A PostgreSQL built with TLS: Debian's (`apt-get install postgresql`; .ci/run does).
    The pgserver wheel's build has none ("SSL is not supported by this build")."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_server_user(*command: str | Path) -> None:
    # PostgreSQL refuses to run as root: run it as Debian's `postgres` user then.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    binaries = _binaries()
    if binaries is None:
        pytest.skip("Debian's PostgreSQL (with TLS) is not installed: apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="sqlatasks-tls-"))
    data = folder / "data"
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        _as_server_user(binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust")
        cert, key = folder / "server.crt", folder / "server.key"
        _as_server_user(
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
        )  # fmt: skip
        tls = TlsServer(folder, _free_port())
        options = (
            f"-h 127.0.0.1 -p {tls.port} -k {folder} -c ssl=on -c ssl_cert_file={cert} "
            f"-c ssl_key_file={key} -c log_connections=on"
        )
        pg_ctl = binaries / "pg_ctl"
        _as_server_user(pg_ctl, "-D", data, "-w", "-o", options, "-l", tls.log, "start")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "sqlatasks", "migrate"],
                cwd=ROOT,
                env={**os.environ, "SQLATASKS_DATABASE_URL": tls.url("psycopg", "require")},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            yield tls
        finally:
            _as_server_user(pg_ctl, "-D", data, "-w", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(("sslmode", "encrypted"), [("require", True), ("disable", False)])
async def test_runner_honours_the_urls_sslmode(
    tls_server: TlsServer, tmp_path: Path, sslmode: str, encrypted: bool
) -> None:
    sync = create_engine(tls_server.url("psycopg", sslmode))
    with Session(sync) as session, session.begin():
        assert enqueue_many(session, record, [Job(key=k) for k in range(3)]) == 3
    sync.dispose()
    seen = len(tls_server.connections())
    runners = Runners(tls_server.url("psycopg", sslmode), tmp_path)
    try:
        runner = runners("--workers", "1", "--burst")
        assert await runner.wait_exit(timeout=120) == 0, runner.log()
    finally:
        runners.close()
    done = ledger.entries(tmp_path, "end")
    assert sorted(e.key for e in done if e.key is not None) == [0, 1, 2]
    # The supervisor's, the worker's and the listener's connections, each TLS or each not.
    ours = [line for line in tls_server.connections()[seen:] if "sqlatasks" in line]
    assert len(ours) >= 3, tls_server.connections()
    assert all(("SSL enabled" in line) is encrypted for line in ours), ours


def test_sslmode_becomes_asyncpgs_ssl_argument() -> None:
    url = make_url(settings.database_url("postgresql+psycopg://u@h/db?sslmode=verify-full"))
    assert url.drivername == "postgresql+asyncpg"
    assert dict(url.query) == {"ssl": "verify-full"}


def test_certificate_files_in_the_url_are_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match="PGSSLROOTCERT") as caught:
        settings.database_url("postgresql://u@h/db?sslmode=verify-ca&sslrootcert=/ca.pem")
    assert "sslrootcert" in str(caught.value)


def test_the_cli_says_which_url_option_is_wrong(tls_server: TlsServer) -> None:
    url = tls_server.url("asyncpg", "require") + "&sslcert=/client.pem"
    done = subprocess.run(
        [sys.executable, "-m", "sqlatasks", "status", "--database-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "PGSSLCERT" in done.stderr
    assert "Traceback" not in done.stderr
