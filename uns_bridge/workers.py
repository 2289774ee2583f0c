"""Worker processes: ``host.workers = N`` runs N bridges that share the edge nodes (host rule W1).

One Python process tops out at about one core (decode, host rules, row building and the UNS are all
interpreter work), while PostgreSQL and the broker use the others. With ``host.workers > 1``,
``uns-bridge run`` becomes a supervisor: it starts N copies of itself, each with ``UNS_WORKER=<i>/<N>``
in its environment, and restarts one that dies (with backoff). Each worker

* subscribes to all Sparkplug traffic and keeps only the edge nodes it owns (``crc32("group/node") % N``,
  :func:`uns_bridge.host.host.shard_of`), dropping the others' messages before decoding them;
* has its own database pool, UNS connection and spool directory (``<spool.dir>/worker-<i>``), and its
  own metrics endpoint on ``http.port + i``;
* worker 0 alone is the Sparkplug host on the wire: it registers the STATE Will and publishes STATE;
* a spool that a run with another worker count left is drained (:func:`leftover_spools`): by a single
  bridge for every ``worker-<i>`` below its spool, by worker 0 for the single bridge's spool and for
  workers it no longer has.

Each worker runs in a session of its own (a terminal's Ctrl-C reaches the supervisor, which stops each
worker with one SIGTERM) and, on Linux, gets SIGTERM when the supervisor dies, however it dies.

A worker that restarts knows none of its nodes: their DATA is data before birth and is answered with
rebirth requests (N5), so its share comes back within a rebirth interval. The embedded broker and
database serve one process, so workers need ``mqtt.url`` and ``database.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from uns_bridge.config import WORKER_ENV, Config

log = logging.getLogger(__name__)

#: seconds a worker gets to stop cleanly (flush, STATE offline) before it is killed
STOP_GRACE_S = 30.0
RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0


class WorkerSetupError(ValueError):
    """The configuration cannot run worker processes (says what to change)."""


def worker_shard(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """``(index, count)`` of this process from ``UNS_WORKER=<index>/<count>``; ``None`` when unset."""
    raw = environ.get(WORKER_ENV, "").strip()
    if not raw:
        return None
    try:
        index_text, count_text = raw.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise WorkerSetupError(f"{WORKER_ENV}={raw!r}: expected <index>/<count>, e.g. 0/2") from None
    if not 0 <= index < count:
        raise WorkerSetupError(f"{WORKER_ENV}={raw!r}: index must be between 0 and {count - 1}")
    return index, count


def worker_config(config: Config, index: int) -> Config:
    """The configuration of worker ``index``: its own spool directory, metrics port and client id."""
    spool = dataclasses.replace(config.spool, dir=config.spool.dir / f"worker-{index}")
    port = config.http.port + index if config.http.port else 0
    http = dataclasses.replace(config.http, port=port)
    mqtt = config.mqtt
    if mqtt.client_id:
        mqtt = dataclasses.replace(mqtt, client_id=f"{mqtt.client_id}-w{index}")
    return dataclasses.replace(config, spool=spool, http=http, mqtt=mqtt)


_WORKER_DIR = re.compile(r"worker-(\d+)")


def leftover_spools(spool_dir: Path, shard: tuple[int, int] | None) -> list[Path]:
    """Spool directories this process must drain besides its own: those a run with another
    ``host.workers`` left behind (otherwise their batches would wait on disk for ever).

    ``spool_dir`` is this process's own spool directory. A single bridge drains every
    ``worker-<i>`` below it; worker 0 of N drains the parent (a single bridge's spool) and
    ``worker-<j>`` for j >= N; the other workers drain nothing else. Only directories holding
    segments are returned.
    """
    if shard is None:
        candidates = _worker_dirs(spool_dir)
    else:
        index, count = shard
        if index != 0:
            return []
        base = spool_dir.parent
        candidates = [base] + [d for d in _worker_dirs(base) if _worker_index(d) >= count]
    return [d for d in candidates if any(d.glob("*.seg"))]


def _worker_index(directory: Path) -> int:
    match = _WORKER_DIR.fullmatch(directory.name)
    return int(match[1]) if match else -1


def _worker_dirs(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.is_dir() and _WORKER_DIR.fullmatch(d.name))


def check_workers(config: Config, demo: bool) -> None:
    """Raise :class:`WorkerSetupError` when ``host.workers > 1`` cannot work with this configuration."""
    if config.host.workers <= 1:
        return
    missing = [
        key
        for key, value in (("mqtt.url", config.mqtt.url), ("database.url", config.database.url))
        if not value
    ]
    if missing:
        raise WorkerSetupError(
            f"host.workers = {config.host.workers} needs {' and '.join(missing)} (UNS_MQTT_URL, UNS_DATABASE_URL): "
            "the embedded broker and database serve a single process; set them or use host.workers = 1"
        )
    if demo:
        raise WorkerSetupError("--demo runs in a single process: use host.workers = 1 with --demo")


def _die_with_parent(parent: int) -> None:
    """In a new worker before it runs (Linux): SIGTERM it when the supervisor dies, even by SIGKILL,
    so no worker is left running on its own (a new supervisor would start a second one per shard)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def worker_command(config_file: Path | None) -> list[str]:
    """How the supervisor starts one worker (this same program, ``run``)."""
    command = [sys.executable, "-m", "uns_bridge", "run"]
    if config_file is not None:
        command += ["--config", str(config_file)]
    return command


class Supervisor:
    """Starts ``count`` workers, restarts the ones that die, stops them all on :meth:`stop`."""

    def __init__(self, command: Sequence[str], count: int, environ: Mapping[str, str] | None = None) -> None:
        self.command = list(command)
        self.count = count
        self.environ = dict(os.environ if environ is None else environ)
        self.restarts = 0
        self._stop = asyncio.Event()
        self._procs: dict[int, asyncio.subprocess.Process] = {}

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs.values() if proc.returncode is None]

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Until :meth:`stop`: keep every worker running; then stop them. Exit code 0, or 2 when a
        worker reported a configuration error (restarting it would not help)."""
        results = await asyncio.gather(*(self._keep(index) for index in range(self.count)))
        return max(results)

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        env = {**self.environ, WORKER_ENV: f"{index}/{self.count}"}
        die_with_us = functools.partial(_die_with_parent, os.getpid()) if sys.platform == "linux" else None
        # a session of its own: a terminal's Ctrl-C reaches the supervisor only, which then stops each
        # worker with one SIGTERM (a worker that got both would take the second as "exit at once")
        proc = await asyncio.create_subprocess_exec(
            *self.command, env=env, preexec_fn=die_with_us, start_new_session=True
        )
        self._procs[index] = proc
        log.info("worker %d/%d started (pid %d)", index, self.count, proc.pid)
        return proc

    async def _keep(self, index: int) -> int:
        delay = RESTART_MIN_S
        while not self._stop.is_set():
            proc = await self._spawn(index)
            stopping = asyncio.ensure_future(self._stop.wait())
            exited = asyncio.ensure_future(proc.wait())
            await asyncio.wait((stopping, exited), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not exited.done():
                await self._terminate(index, proc)
                return 0
            code = proc.returncode
            if code == 2:
                log.error("worker %d exited with a configuration error; stopping every worker", index)
                self._stop.set()
                return 2
            self.restarts += 1
            log.error(
                "worker %d (pid %d) exited with code %s; restarting it in %.0f s",
                index,
                proc.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, RESTART_MAX_S)
        return 0

    async def _terminate(self, index: int, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.warning("worker %d did not stop within %.0f s; killing it", index, STOP_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        log.info("worker %d stopped (exit code %s)", index, proc.returncode)


async def supervise(config: Config, config_file: Path | None) -> int:
    """Run ``host.workers`` workers until SIGINT/SIGTERM; returns the exit code."""
    supervisor = Supervisor(worker_command(config_file), config.host.workers)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stop)
    log.info(
        "running %d worker processes; edge nodes are shared by crc32(group/node) %% %d",
        config.host.workers,
        config.host.workers,
    )
    try:
        return await supervisor.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
