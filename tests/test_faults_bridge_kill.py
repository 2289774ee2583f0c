"""The bridge process (``python -m uns_bridge run``) SIGKILLed under load and restarted with the same
spool directory and database.

A private Mosquitto and the real PostgreSQL (``database_dsn``). Promise: every sample committed before
the kill is still there after the restart, nothing is stored twice, and every sample published after
the nodes' rebirth to the new bridge is stored. The bridge's MQTT session is clean, so what the broker
had in flight for the killed bridge is gone: the test reports that number as ``lost``.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.fault_live import Load, Recorder, stored_rows, tally, until, until_stored
from tests.private_servers import PrivateMosquitto, mosquitto_binary
from tests.services import MqttBroker
from tests.test_bridge_process import BridgeProcess, _env

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="no mosquitto binary")

NODES = 3


def run_dir(tmp: Path, n: int) -> Path:
    """A working directory (and log) per bridge run; the spool directory is shared."""
    path = tmp / f"run{n}"
    path.mkdir()
    return path


def reborn(load: Load, births: list[int]) -> bool:
    """Every node has birthed since it had ``births`` births."""
    return all(len(e.birth_marks) > b for e, b in zip(load.edges, births, strict=True))


def online_since(recorder: Recorder, topic: str, since: float) -> bool:
    return any(doc.get("online") is True for doc in recorder.messages(topic, since))


async def kill_and_restart(
    dsn: str, group: str, prefix: str, tmp: Path, *, load_s: float, kills: int
) -> None:
    host_id = f"kill-{uuid.uuid4().hex[:8]}"
    state_topic = f"spBv1.0/STATE/{host_id}"
    with PrivateMosquitto(persistence=False) as mosquitto:
        broker = MqttBroker(mosquitto.host, mosquitto.port, "mosquitto")
        env = _env(broker, dsn, group, prefix, host_id, tmp)
        env["UNS_HOST_REBIRTH_INTERVAL_MS"] = "200"
        env["UNS_DATABASE_FLUSH_MS"] = "50"
        recorder = Recorder(broker.host, broker.port, [state_topic])
        load = Load(broker.host, broker.port, group, NODES, 0.005)
        bridges: list[BridgeProcess] = []
        committed_at_kill: set[int] = set()
        try:
            recorder.start()
            bridges.append(BridgeProcess(env, run_dir(tmp, 0)))
            await until(lambda: online_since(recorder, state_topic, 0.0), 60, "STATE online")
            load.start()
            for _ in range(kills):
                await asyncio.sleep(load_s / (kills + 1))
                await until_stored(dsn, group, load.sent[:10], 30)
                bridges[-1].process.send_signal(signal.SIGKILL)
                await bridges[-1].wait(30)
                committed_at_kill |= {v for v, _t, _m in await stored_rows(dsn, group)}
                births = [len(e.birth_marks) for e in load.edges]
                back = time.monotonic()
                bridges.append(BridgeProcess(env, run_dir(tmp, len(bridges))))
                await until(
                    functools.partial(online_since, recorder, state_topic, back),
                    60,
                    "STATE online after restart",
                )
                await until(
                    functools.partial(reborn, load, births),
                    30,
                    "every node reborn for the new bridge",
                )
            await asyncio.sleep(load_s / (kills + 1))
            load.stop_sending()
            promised = [i for e in load.edges for i in e.after_last_birth()]
            await until(lambda: set(promised) <= set(load.acked), 30, "the broker to acknowledge")
            await until_stored(dsn, group, promised, 60)
            bridges[-1].process.send_signal(signal.SIGTERM)
            assert await bridges[-1].wait(60) == 0, bridges[-1].output()[-3000:]
        finally:
            load.close()
            recorder.close()
            for bridge in bridges:
                bridge.close()
        rows = await stored_rows(dsn, group)
        final = {v for v, _t, _m in rows}
        everything = tally(load.sent, rows)
        print(everything.line(f"bridge SIGKILLed {kills}x under load and restarted"))
        print(
            f"  committed before the kill(s): {len(committed_at_kill)}, still stored: "
            f"{len(committed_at_kill & final)}; lost = never redelivered by the broker (clean session): "
            f"{everything.lost}"
        )
        print(tally(promised, rows).line("  published after the last rebirth"))
        assert committed_at_kill <= final, "a sample committed before the kill is gone"
        assert everything.duplicated == 0
        assert tally(promised, rows).lost == 0
        assert all("Traceback" not in b.output() for b in bridges), bridges[-1].output()[-3000:]


async def test_bridge_sigkill_under_load(
    database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path
) -> None:
    await kill_and_restart(database_dsn, group_id, uns_prefix, tmp_path, load_s=3.0, kills=1)


@pytest.mark.soak
async def test_bridge_sigkill_60s(database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path) -> None:
    await kill_and_restart(database_dsn, group_id, uns_prefix, tmp_path, load_s=60.0, kills=4)
