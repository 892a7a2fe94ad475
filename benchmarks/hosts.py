"""`python -m benchmarks hosts` (alias `scale`): runners on many "hosts" against one PostgreSQL.

Each host is a network namespace of its own (`ip netns`), linked to this machine by a veth
pair: host i is 10.231.i.2/30, this side 10.231.i.1/30. A PostgreSQL of the benchmark's own
(pgserver's binaries, run as pgserver's user) listens on the host-side addresses only, so every
runner reaches it over its own link and no traffic goes anywhere but to addresses this
benchmark assigned. Needs root; creates and removes everything itself; every wait is bounded.

Rounds, for 1, 2, 4 and 8 hosts (one runner each, one worker, concurrency 50):
- drain: a backlog of no-op tasks, drained; tasks/s, with the database's wait events sampled
  from pg_stat_activity and the CPU used by PostgreSQL and by the runners;
- pickup: single tasks committed one by one at a modest rate while every runner idles on
  LISTEN; commit → start, p50 and p95 (each NOTIFY wakes every host; one claims);
- chaos (2 hosts): host 2's link cut mid-run: its tasks come back after their lease, run on
  host 1, and no two executions of one task overlap.
"""

# ruff: noqa: ASYNC110, ASYNC240 -- a benchmark that polls the database and reads small local files
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pgserver

from benchmarks import database

HOSTS = (1, 2, 4, 8)
PORT = 55432
NETWORK = "10.231"
CONCURRENCY = 50
PG_USER = "pgserver"
BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=30)


def server_side(i: int) -> str:
    return f"{NETWORK}.{i}.1"


@contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    """`count` namespaces sqlatasks-h1…, each with its veth link up; removed at exit."""
    names: list[str] = []
    try:
        for i in range(1, count + 1):
            name = f"sqlatasks-h{i}"
            sh("ip", "netns", "del", name, check=False)  # left over from a killed run
            sh("ip", "link", "del", f"sqt-h{i}", check=False)
            sh("ip", "netns", "add", name)
            names.append(name)
            sh("ip", "link", "add", f"sqt-h{i}", "type", "veth", "peer", "name", f"sqt-n{i}")
            sh("ip", "link", "set", f"sqt-n{i}", "netns", name)
            sh("ip", "addr", "add", f"{server_side(i)}/30", "dev", f"sqt-h{i}")
            sh("ip", "link", "set", f"sqt-h{i}", "up")
            inside = ("ip", "netns", "exec", name, "ip")
            sh(*inside, "addr", "add", f"{NETWORK}.{i}.2/30", "dev", f"sqt-n{i}")
            sh(*inside, "link", "set", f"sqt-n{i}", "up")
            sh(*inside, "link", "set", "lo", "up")
        yield names
    finally:
        for i, name in enumerate(names, start=1):
            sh("ip", "netns", "del", name, check=False)  # takes its end of the veth pair along
            sh("ip", "link", "del", f"sqt-h{i}", check=False)


@contextmanager
def postgres(count: int) -> Iterator[str]:
    """A fresh PostgreSQL listening on the host-side addresses of `count` links; its URL."""
    folder = Path(tempfile.mkdtemp(prefix="sqlatasks-hosts-"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    shutil.chown(data, PG_USER, PG_USER)
    subprocess.run(
        [BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust"],
        check=True, capture_output=True, timeout=120, user=PG_USER, group=PG_USER,
    )  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {NETWORK}.0.0/16 trust\n")
    addresses = ",".join(server_side(i) for i in range(1, count + 1))
    log = (folder / "postgres.log").open("w")
    server = subprocess.Popen(
        [BIN / "postgres", "-D", data, "-p", str(PORT), "-c", f"listen_addresses={addresses}",
         "-c", f"unix_socket_directories={data}", "-c", "max_connections=300"],
        stdout=log, stderr=subprocess.STDOUT, user=PG_USER, group=PG_USER,
    )  # fmt: skip
    url = f"postgresql+asyncpg://postgres@{server_side(1)}:{PORT}/postgres"
    try:
        asyncio.run(_wait_for_server(url))
        yield url
    finally:
        server.terminate()
        server.wait(60)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _wait_for_server(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await (await database.raw_connection(url)).close()
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def start_runner(host: int, stamps: Path, *flags: str) -> subprocess.Popen[bytes]:
    """A runner on host `host` (in its namespace), reaching the server over its own link."""
    url = f"postgresql://postgres@{server_side(host)}:{PORT}/postgres"
    env = {
        **os.environ,
        "SQLATASKS_DATABASE_URL": url,
        "SQLATASKS_BENCH_STAMPS": str(stamps),
        "SQLATASKS_BENCH_HOST": f"h{host}",
        "PYTHONPATH": str(database.ROOT),
    }
    return subprocess.Popen(
        ["ip", "netns", "exec", f"sqlatasks-h{host}", sys.executable, "-m", "sqlatasks.runner",
         "--import", "benchmarks.noop", "--import", "benchmarks.leased", "--workers", "1",
         *flags],
        cwd=database.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def stop(runners: list[subprocess.Popen[bytes]]) -> None:
    for runner in runners:
        if runner.poll() is None:
            os.killpg(runner.pid, 9)
        runner.wait(30)


def process_cpu(name: str) -> float:
    """CPU seconds used so far by live processes whose command line contains `name`."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if name not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core, every process, others' too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def queue_count(conn: Any) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM sqlatasks_tasks"))


async def drain(url: str, hosts: int, tasks: int, stamps: Path) -> dict[str, Any]:
    """Backlog of `tasks` no-ops, drained by `hosts` runners: rate, waits, CPU."""
    conn = await database.raw_connection(url)
    await conn.execute("TRUNCATE sqlatasks_tasks")
    await conn.execute(
        "INSERT INTO sqlatasks_tasks (task_name, payload) SELECT 'benchmarks.noop:noop', "
        "jsonb_build_object('i', i) FROM generate_series(1, $1) i",
        tasks,
    )
    runners = [
        start_runner(h, stamps, "--concurrency", str(CONCURRENCY)) for h in range(1, hosts + 1)
    ]
    waits: collections.Counter[str] = collections.Counter()
    try:
        # Start timing at the first claim: every runner's start-up is not the queue's cost.
        deadline = time.monotonic() + 120
        while await queue_count(conn) == tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        began, pg_cpu, busy = time.monotonic(), process_cpu("postgres: "), machine_busy()
        left = tasks
        while left and time.monotonic() < deadline + 600:
            for row in await conn.fetch(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w FROM "
                "pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ):
                waits[row["w"]] += 1
            left = await queue_count(conn)
            await asyncio.sleep(0.02)
        seconds = time.monotonic() - began
        pg_used = process_cpu("postgres: ") - pg_cpu
        busy_used = machine_busy() - busy
    finally:
        stop(runners)
        await conn.close()
    samples = sum(waits.values()) or 1
    return {
        "hosts": hosts,
        "tasks": tasks,
        "seconds": round(seconds, 2),
        "rate": round(tasks / seconds),
        "postgres_cpu_cores": round(pg_used / seconds, 2),
        "machine_busy_cores": round(busy_used / seconds, 2),
        "waits": {w: round(n / samples, 2) for w, n in waits.most_common(5)},
    }


async def pickup(url: str, hosts: int, count: int, stamps: Path) -> dict[str, Any]:
    """Single tasks, one commit each, ~20/s, while every runner idles on LISTEN."""
    stamps.unlink(missing_ok=True)
    conn = await database.raw_connection(url)
    await conn.execute("TRUNCATE sqlatasks_tasks")
    runners = [start_runner(h, stamps, "--concurrency", str(CONCURRENCY), "--idle-sleep", "30")
               for h in range(1, hosts + 1)]  # fmt: skip
    committed: dict[int, float] = {}
    try:
        await asyncio.sleep(3 + hosts)  # every runner started and listening
        for key in range(count):
            await conn.execute(
                "INSERT INTO sqlatasks_tasks (task_name, payload) VALUES "
                "('benchmarks.noop:stamp', jsonb_build_object('key', $1::int))",
                key,
            )
            committed[key] = time.time()
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 60
        while await queue_count(conn) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop(runners)
        await conn.close()
    started = {
        int(k): float(t) for k, t in (line.split() for line in stamps.read_text().splitlines())
    }
    delays = sorted(1000 * (started[k] - committed[k]) for k in committed if k in started)
    return {
        "hosts": hosts,
        "p50_ms": round(statistics.median(delays), 1),
        "p95_ms": round(delays[int(0.95 * (len(delays) - 1))], 1),
        "ran": len(delays),
    }


async def chaos(url: str, stamps: Path) -> dict[str, Any]:
    """Two hosts; host 2's link is cut while it runs tasks. Its tasks must come back after
    their lease and run on host 1, and no two executions of one task may overlap."""
    stamps.unlink(missing_ok=True)
    conn = await database.raw_connection(url)
    await conn.execute("TRUNCATE sqlatasks_tasks")
    flags = ("--concurrency", "10", "--task-timeout", "3", "--check-interval", "1")
    runners = [start_runner(h, stamps, *flags) for h in (1, 2)]
    try:
        await asyncio.sleep(4)
        await conn.execute(
            "INSERT INTO sqlatasks_tasks (task_name, payload) SELECT 'benchmarks.leased:hold', "
            "jsonb_build_object('key', i, 'seconds', 1.0) FROM generate_series(1, 80) i"
        )
        await asyncio.sleep(2.5)
        sh("ip", "link", "set", "sqt-h2", "down")
        cut = time.time()
        deadline = time.monotonic() + 180
        while await queue_count(conn) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        left = await queue_count(conn)
    finally:
        sh("ip", "link", "set", "sqt-h2", "up", check=False)
        stop(runners)
        await conn.close()
    entries = [json.loads(line) for line in stamps.read_text().splitlines()]
    runs: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for entry in entries:
        runs[entry["key"]].append(entry)
    overlaps = 0
    for found in runs.values():
        spans = _spans(found)
        overlaps += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    again = [k for k, found in runs.items() if len({e["host"] for e in found}) > 1]
    back = [e["at"] - cut for e in entries if e["key"] in again and e["host"] == "h1"]
    return {
        "tasks": 80,
        "left_in_queue": left,
        "completed": sum(1 for found in runs.values() if any(e["event"] == "end" for e in found)),
        "cut_off_on_h2_then_run_on_h1": len(again),
        "first_rerun_after_cut_s": round(min(back), 1) if back else None,
        "overlapping_executions": overlaps,
    }


def _spans(found: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) per execution, by host and attempt; a cut-off run ends at +inf."""
    spans = []
    for entry in found:
        if entry["event"] == "start":
            end = next(
                (e["at"] for e in found if e["event"] == "end" and e["host"] == entry["host"]
                 and e["attempt"] == entry["attempt"]),
                float("inf"),
            )  # fmt: skip
            spans.append((entry["at"], end))
    return sorted(spans)


def main(quick: bool) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise SystemExit("benchmarks hosts: needs root (ip netns)")
    tasks = 5_000 if quick else 20_000
    results: dict[str, Any] = {"cores": os.cpu_count(), "drain": [], "pickup": []}
    with ExitStack() as stack:
        stack.enter_context(namespaces(max(HOSTS)))
        url = stack.enter_context(postgres(max(HOSTS)))
        database.prepare(url, durable=False)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.chmod(0o777)
        for hosts in HOSTS:
            row = asyncio.run(drain(url, hosts, tasks, folder / "drain"))
            print(json.dumps(row), flush=True)
            results["drain"].append(row)
        for hosts in HOSTS:
            row = asyncio.run(pickup(url, hosts, 40 if quick else 100, folder / "pickup"))
            print(json.dumps(row), flush=True)
            results["pickup"].append(row)
        results["chaos"] = asyncio.run(chaos(url, folder / "chaos"))
        print(json.dumps(results["chaos"]), flush=True)
    return results
