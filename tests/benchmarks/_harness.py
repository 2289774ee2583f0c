"""What the end-to-end and ceiling benchmarks share.

* :class:`Publisher`: the publisher *process* (:mod:`tests.benchmarks._publisher`) driven over JSON lines.
* :func:`bench_database`: a database ``uns_bench_<random>`` created for one run and always dropped.
* :class:`CpuMeter` / :func:`peak_rss_mb`: psutil CPU per process (bridge, mosquitto, postgres backends
  of the bench database, publisher) and peak RSS (``VmHWM``).
* :func:`clear_retained`: removes the retained messages a run left on the shared broker.
* :func:`percentile`, :func:`services_or_reason`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped,unused-ignore]

from tests import services
from tests.benchmarks._publisher import Fleet

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BenchUnavailable(RuntimeError):
    """A service or component the benchmark needs is missing; the message says which and why."""


def services_or_reason() -> tuple[str, services.MqttBroker]:
    """(admin DSN, broker) of the real local services, or :class:`BenchUnavailable`."""
    broker = services.local_mosquitto()
    if broker is None:
        raise BenchUnavailable("no Mosquitto on 127.0.0.1:1883 (benchmarks need the real broker)")
    dsn = services.local_postgres_dsn()
    if dsn is None:
        raise BenchUnavailable("no PostgreSQL on 127.0.0.1:5432 (benchmarks need the real server)")
    return dsn, broker


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def bench_database(admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """(dsn, name) of a fresh ``uns_bench_<random>`` database, dropped (FORCE) however the block ends."""
    name = unique("uns_bench")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield services.with_database(admin_dsn, name), name
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# ---------------------------------------------------------------- processes


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _status_mb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process in MB, None when unreadable."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float | None:
    """Current resident set (VmRSS) of a live process in MB, None when unreadable."""
    return _status_mb(pid, "VmRSS:")


def mosquitto_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "mosquitto":
            pids.append(proc.pid)
    return pids


async def postgres_backends(dsn: str, database: str) -> list[int]:
    """PIDs of the server processes serving ``database`` right now (the bench's own backends)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", database
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


@dataclass
class CpuMeter:
    """CPU seconds (user + system) per named group of processes between :meth:`start` and :meth:`stop`."""

    groups: dict[str, list[int]]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    @staticmethod
    def _cpu(pids: Iterable[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start = {name: self._cpu(pids) for name, pids in self.groups.items()}

    def stop(self, wall: float | None = None) -> dict[str, float]:
        """Percent of one core per group over the interval (or over ``wall`` seconds of it that were busy)."""
        wall = max(1e-9, wall if wall is not None else time.perf_counter() - self._t0)
        return {
            name: 100.0 * (self._cpu(pids) - self._start.get(name, 0.0)) / wall
            for name, pids in self.groups.items()
        }


def cpu_note(cpu: dict[str, float]) -> str:
    return "CPU " + " ".join(f"{name} {pct:.0f}%" for name, pct in cpu.items())


class Publisher:
    """The publisher process for one :class:`Fleet`; use ``async with Publisher(fleet) as pub``."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> Publisher:
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "tests.benchmarks._publisher",
            self.fleet.to_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
            env=child_env(),
            cwd=REPO,
        )
        self.info = await self._reply(timeout=120)
        return self

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchUnavailable(f"publisher gave no answer within {timeout:.0f} s") from None
        if not line:
            err = b""
            if self.proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    err = await asyncio.wait_for(self.proc.stderr.read(), 5)
            raise BenchUnavailable(f"publisher died: {err.decode(errors='replace')[-800:]}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchUnavailable(f"publisher: {reply['error']}")
        return reply

    async def command(self, op: str, timeout: float = 600, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._reply(timeout)

    async def births(self, first: int = 0, last: int | None = None, probe: bool = True) -> dict[str, Any]:
        return await self.command("births", first=first, last=last, probe=probe)

    async def run(self, msg_rate: float, duration: float, probe_hz: float = 0.0) -> dict[str, Any]:
        return await self.command(
            "run", timeout=duration * 4 + 60, msg_rate=msg_rate, duration=duration, probe_hz=probe_hz
        )

    async def blast(self, count: int, counter: str | None = None, window: int = 500) -> dict[str, Any]:
        return await self.command("blast", count=count, counter=counter, window=window)

    async def __aexit__(self, *exc: object) -> None:
        await stop_process(self.proc, quit_line=b'{"op": "quit"}\n')


async def stop_process(
    proc: asyncio.subprocess.Process | None,
    *,
    quit_line: bytes | None = None,
    signal_first: bool = False,
    grace: float = 10.0,
) -> int | None:
    """End a child we started: polite first (quit line or SIGTERM), SIGKILL after ``grace`` seconds."""
    if proc is None or proc.returncode is not None:
        return None if proc is None else proc.returncode
    with contextlib.suppress(ProcessLookupError, BrokenPipeError, ConnectionResetError):
        if quit_line is not None and proc.stdin is not None:
            proc.stdin.write(quit_line)
            await proc.stdin.drain()
            proc.stdin.close()
        if signal_first or quit_line is None:
            proc.terminate()
    try:
        return await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return await proc.wait()


async def clear_retained(host: str, port: int, topic_filters: Sequence[str], settle: float = 1.0) -> int:
    """Delete every retained message under ``topic_filters`` (empty retained publish); returns how many."""
    import aiomqtt

    topics: set[str] = set()
    async with aiomqtt.Client(host, port, identifier=unique("bench-clean")) as client:
        for flt in topic_filters:
            await client.subscribe(flt, qos=0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle):
                async for message in client.messages:
                    if message.retain and message.payload:
                        topics.add(str(message.topic))
        for topic in topics:
            await client.publish(topic, b"", qos=0, retain=True)
    return len(topics)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours, the repository on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class Sink:
    """A ceiling process of :mod:`tests.benchmarks._sinks`: ``async with Sink(mode, args) as s: ... await s.result()``."""

    def __init__(self, mode: str, args: dict[str, Any]) -> None:
        self.mode, self.args = mode, args
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> Sink:
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "tests.benchmarks._sinks",
            self.mode,
            json.dumps(self.args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
            cwd=REPO,
        )
        ready = await self._line(60)
        if not ready.get("ready"):
            raise BenchUnavailable(f"{self.mode} sink not ready: {ready}")
        return self

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchUnavailable(f"{self.mode} sink silent for {timeout:.0f} s") from None
        if not line:
            err = await self.proc.stderr.read()
            raise BenchUnavailable(f"{self.mode} sink died: {err.decode(errors='replace')[-800:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def result(self, timeout: float = 300) -> dict[str, Any]:
        return await self._line(timeout)

    async def __aexit__(self, *exc: object) -> None:
        await stop_process(self.proc, grace=5)
