"""A real PgBouncer for the tests: Debian's `pgbouncer`, started on a free loopback port in
front of the test's PostgreSQL, in one pool mode, stopped at the end.

PgBouncer refuses to run as root ("PgBouncer should not run as root"): as root it is started
as the owner of the server's socket folder (pgserver's own `pgserver` user, whose data folder
holds the socket), or `nobody` for a TCP server; it reads its configuration before switching.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url

PoolMode = Literal["session", "transaction"]


def installed() -> bool:
    return shutil.which("pgbouncer") is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def pgbouncer(server_url: str, folder: Path, mode: PoolMode, *, extra: str = "") -> Iterator[str]:
    """Run PgBouncer in `mode` before the server of `server_url`; yield the same URL (same
    user and database) through PgBouncer. `extra` lines go into its [pgbouncer] section."""
    server = make_url(server_url)
    socket_dir = server.query.get("host")
    target = (
        f"host={socket_dir}"
        if isinstance(socket_dir, str)
        else f"host={server.host or '127.0.0.1'}"
    )
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    users = folder / "userlist.txt"
    users.write_text(f'"{server.username or "postgres"}" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = {target} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\npool_mode = {mode}\n"
        "max_client_conn = 500\ndefault_pool_size = 60\n"
        f"{extra}\n"
    )
    command = ["pgbouncer", str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", _unprivileged_user(socket_dir)]
    log = (folder / "pgbouncer.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, port, folder / "pgbouncer.log")
        url = server.set(host="127.0.0.1", port=port, query={})
        yield url.render_as_string(hide_password=False)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until PgBouncer accepts connections; it starts in milliseconds, 30 s is anti-hang."""
    deadline = time.monotonic() + 30
    while not _accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"pgbouncer did not start:\n{log.read_text()}")
        time.sleep(0.02)


def _unprivileged_user(socket_dir: object) -> str:
    """Who may reach the server: the owner of its socket folder, else `nobody`."""
    if isinstance(socket_dir, str):
        owner = os.stat(socket_dir).st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    return "nobody"
