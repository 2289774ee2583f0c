"""The real bridge under benchmark, and what the benchmarks observe of it.

* :class:`BridgeProcess`: ``python -m uns_bridge run`` as a child with ``UNS_MQTT_URL``,
  ``UNS_DATABASE_URL`` (the bench database), ``UNS_PREFIX``, ``UNS_MQTT_GROUPS``, ``UNS_HTTP_PORT`` and a
  host id of its own. Ready = its STATE ``online: true`` is on the broker (it has subscribed by then).
  If it exits or never gets ready, :class:`BenchUnavailable` says why, with the tail of its log.
* :class:`StoreProbe`: counts in ``uns.samples`` / ``uns.metrics`` for one group, and the newest row of
  the latency probe metric (a cheap primary-key lookup).
* :class:`UnsProbe`: the probe metric's UNS topic; latency = arrival - the JSON ``timestamp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped,unused-ignore]

from tests.benchmarks._harness import (
    PYTHON,
    REPO,
    BenchUnavailable,
    child_env,
    clear_retained,
    stop_process,
    unique,
)
from tests.benchmarks._publisher import PROBE_DEVICE, PROBE_METRIC, PROBE_NODE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _is_exception_line(line: str) -> bool:
    """``package.SomeError: detail`` as the last line of a logged traceback."""
    head = line.split(":", 1)[0]
    return bool(line) and not line[0].isspace() and ":" in line and head.endswith(("Error", "Exception"))


class BridgeProcess:
    """``async with BridgeProcess(...) as bridge``: started, ready, and stopped (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        dsn: str,
        groups: list[str],
        host: str,
        port: int,
        ready_timeout: float = 90.0,
        workers: int = 1,
    ) -> None:
        self.dsn, self.groups, self.host, self.port = dsn, groups, host, port
        self.workers = workers
        self.prefix = unique("ubench")
        self.host_id = unique("bench-host")
        self.http_port = free_port()
        self.ready_timeout = ready_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self._logdir = tempfile.TemporaryDirectory(prefix="bench-bridge-")
        self.log_path = Path(self._logdir.name) / "bridge.log"
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The bridge process and, with ``workers > 1``, the worker processes it supervises."""
        pids = [self.pid]
        with contextlib.suppress(psutil.Error):
            pids += [child.pid for child in psutil.Process(self.pid).children()]
        return pids

    def errors(self, limit: int = 3) -> str:
        """The bridge's first ERROR log lines, each with the exception it ended in, for a failure message."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        found: list[str] = []
        for i, line in enumerate(text):
            if " ERROR " in line or " CRITICAL " in line:
                cause = next((t for t in text[i + 1 : i + 60] if _is_exception_line(t)), "")
                found.append(line.strip() + (f" -> {cause.strip()}" if cause else ""))
                if len(found) >= limit:
                    break
        return "; ".join(found)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def __aenter__(self) -> BridgeProcess:
        env = child_env(
            UNS_MQTT_URL=f"mqtt://{self.host}:{self.port}",
            UNS_DATABASE_URL=self.dsn,
            UNS_PREFIX=self.prefix,
            UNS_MQTT_GROUPS=",".join(self.groups),
            UNS_HTTP_PORT=str(self.http_port),
            UNS_HOST_ID=self.host_id,
            UNS_LOG_LEVEL="INFO",
            UNS_HOST_WORKERS=str(self.workers),
        )
        env.pop("UNS_CONFIG", None)
        log = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                PYTHON, "-m", "uns_bridge", "run", stdout=log, stderr=log, env=env, cwd=REPO
            )
        finally:
            log.close()
        try:
            await self._wait_ready()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _wait_ready(self) -> None:
        import aiomqtt

        assert self.proc is not None
        topic = f"spBv1.0/STATE/{self.host_id}"
        exited = asyncio.create_task(self.proc.wait())
        try:
            async with aiomqtt.Client(self.host, self.port, identifier=unique("bench-ready")) as client:
                await client.subscribe(topic, qos=1)

                async def online() -> None:
                    async for message in client.messages:
                        with contextlib.suppress(ValueError, TypeError, AttributeError):
                            if json.loads(bytes(message.payload)).get("online") is True:  # type: ignore[arg-type,unused-ignore]
                                return

                waiter = asyncio.create_task(online())
                done, _ = await asyncio.wait(
                    {waiter, exited}, timeout=self.ready_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if exited in done:
                    raise BenchUnavailable(
                        f"the bridge exited with code {self.proc.returncode} before it was ready:\n{self.log_tail()}"
                    )
                if waiter not in done:
                    raise BenchUnavailable(
                        f"the bridge published no STATE online within {self.ready_timeout:.0f} s:\n{self.log_tail()}"
                    )
        finally:
            if not exited.done():
                exited.cancel()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.exit_code = await stop_process(self.proc, signal_first=True, grace=30)
        with contextlib.suppress(Exception):
            await clear_retained(self.host, self.port, [f"{self.prefix}/#", f"spBv1.0/STATE/{self.host_id}"])
        self._logdir.cleanup()


class StoreProbe:
    """Read-only queries on the bench database for one group."""

    def __init__(self, conn: Any, group: str) -> None:
        self.conn, self.group = conn, group

    @classmethod
    async def connect(cls, dsn: str, group: str) -> StoreProbe:
        return cls(await asyncpg.connect(dsn), group)

    async def close(self) -> None:
        await self.conn.close()

    async def samples(self) -> int:
        count: int = await self.conn.fetchval(
            "select count(*) from uns.samples where group_id = $1", self.group
        )
        return count

    async def device_metrics(self) -> int:
        count: int = await self.conn.fetchval(
            "select count(*) from uns.metrics where group_id = $1 and device_id is not null", self.group
        )
        return count

    async def probe_metric(self) -> tuple[int, str | None] | None:
        row = await self.conn.fetchrow(
            "select metric_id, uns_topic from uns.metrics where group_id = $1 and edge_node_id = $2 "
            "and device_id = $3 and metric = $4",
            self.group,
            PROBE_NODE,
            PROBE_DEVICE,
            PROBE_METRIC,
        )
        return None if row is None else (int(row["metric_id"]), row["uns_topic"])

    async def newest_ms(self, metric_id: int) -> float | None:
        value = await self.conn.fetchval(
            "select extract(epoch from max(time)) * 1000 from uns.sample where metric_id = $1", metric_id
        )
        return None if value is None else float(value)

    async def settled(self, quiet: float = 1.0, timeout: float = 60.0) -> int:
        """The sample count once it stopped changing for ``quiet`` seconds (or after ``timeout``)."""
        started = time.perf_counter()
        last, since = await self.samples(), time.perf_counter()
        while time.perf_counter() - since < quiet and time.perf_counter() - started < timeout:
            await asyncio.sleep(0.25)
            count = await self.samples()
            if count != last:
                last, since = count, time.perf_counter()
        return last

    async def wait_for(
        self, what: str, target: int, timeout: float, stall: float = 15.0
    ) -> tuple[int, float]:
        """Poll ``samples`` or ``device_metrics`` until >= target; (last count, seconds waited).

        Gives up after ``timeout`` seconds, or after ``stall`` seconds without progress."""
        query = self.samples if what == "samples" else self.device_metrics
        started = last_change = time.perf_counter()
        last = -1
        while True:
            count = await query()
            now = time.perf_counter()
            if count >= target:
                return count, now - started
            if count != last:
                last, last_change = count, now
            if now - started > timeout or now - last_change > stall:
                return count, now - started
            await asyncio.sleep(0.25)


class LatencyWatch:
    """While running: DB latency (poll the probe's newest row) and UNS latency (its republished JSON)."""

    def __init__(
        self, dsn: str, store: StoreProbe, metric_id: int, uns_topic: str | None, host: str, port: int
    ) -> None:
        self.dsn, self.store, self.metric_id, self.uns_topic = dsn, store, metric_id, uns_topic
        self.host, self.port = host, port
        self.errors: list[str] = []
        self.db_ms: list[float] = []
        self.uns_ms: list[float] = []
        self.newest = 0.0
        #: wall-clock time (s) when ``newest`` last advanced
        self.newest_seen = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll_db()))
        if self.uns_topic:
            self._tasks.append(asyncio.create_task(self._watch_uns()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 10)

    def reset(self) -> None:
        self.db_ms, self.uns_ms = [], []

    async def wait_newest(self, ms: float, timeout: float, stall: float) -> bool:
        """Wait until the probe row of time ``ms`` (or a later one) is visible; False on timeout/stall."""
        started = time.perf_counter()
        seen, since = self.newest, started
        while self.newest < ms:
            now = time.perf_counter()
            if self.newest != seen:
                seen, since = self.newest, now
            if now - started > timeout or now - since > stall:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _poll_db(self) -> None:
        # a connection of its own: the step's counting queries run at the same time on the other one
        own = await StoreProbe.connect(self.dsn, self.store.group)
        try:
            while True:
                try:
                    newest = await own.newest_ms(self.metric_id)
                except (asyncpg.PostgresError, OSError) as exc:
                    self.errors.append(repr(exc))
                    await asyncio.sleep(0.1)
                    continue
                self._observe(newest)
                await asyncio.sleep(0.01)
        finally:
            await own.close()

    def _observe(self, newest: float | None) -> None:
        now = time.time() * 1000
        if newest is not None and newest > self.newest:
            if self.newest:
                self.db_ms.append(now - newest)
            self.newest, self.newest_seen = newest, now / 1000

    async def _watch_uns(self) -> None:
        import aiomqtt

        assert self.uns_topic is not None
        async with aiomqtt.Client(self.host, self.port, identifier=unique("bench-uns")) as client:
            await client.subscribe(self.uns_topic, qos=0)
            self._subscribed.set()
            async for message in client.messages:
                now = time.time() * 1000
                if message.retain:
                    continue
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    stamp = json.loads(bytes(message.payload))["timestamp"]  # type: ignore[arg-type,unused-ignore]
                    self.uns_ms.append(now - float(stamp))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
