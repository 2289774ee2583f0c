"""The bridge as a process (``python -m uns_bridge run``): its STATE Will fires when it is killed, and
SIGTERM makes it publish STATE offline itself and exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.bridge_helpers import Observer
from tests.services import MqttBroker
from uns_bridge.embedded import free_port


def _env(broker: MqttBroker, dsn: str, group: str, prefix: str, host_id: str, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "UNS_MQTT_URL": broker.url,
            "UNS_DATABASE_URL": dsn,
            "UNS_PREFIX": prefix,
            "UNS_MQTT_GROUPS": group,
            "UNS_HOST_ID": host_id,
            "UNS_HTTP_PORT": str(free_port()),
            "UNS_SPOOL_DIR": str(tmp / "spool"),
            "UNS_LOG_LEVEL": "INFO",
        }
    )
    env.pop("UNS_CONFIG", None)
    return env


class BridgeProcess:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / "bridge.log"
        self._log_handle = open(self.log, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uns_bridge", "run"],
            env=env,
            cwd=cwd,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait(self, timeout: float = 60) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.process.poll() is None:
            if loop.time() > deadline:
                raise AssertionError(f"bridge did not exit; log:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log_handle.close()


async def _started(bridge: BridgeProcess, seen: Observer, state_topic: str) -> int:
    try:
        await seen.wait_for(
            lambda: seen.field(state_topic, "online") is True, timeout=60, what="STATE online"
        )
    except AssertionError:
        raise AssertionError(f"bridge never came online; log:\n{bridge.output()[-3000:]}") from None
    timestamp: int = seen.json(state_topic)["timestamp"]
    return timestamp


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_state_death_when_the_process_ends(
    mqtt_broker: MqttBroker, database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path, how: str
) -> None:
    host_id = f"proc-{uuid.uuid4().hex[:8]}"
    state_topic = f"spBv1.0/STATE/{host_id}"
    env = _env(mqtt_broker, database_dsn, group_id, uns_prefix, host_id, tmp_path)
    async with Observer(mqtt_broker.host, mqtt_broker.port, [state_topic]) as seen:
        bridge = BridgeProcess(env, tmp_path)
        try:
            online_ts = await _started(bridge, seen, state_topic)
            if how == "SIGKILL":
                bridge.process.send_signal(signal.SIGKILL)
                # nothing of ours runs any more: this is the broker publishing our Will
                await seen.wait_for(
                    lambda: seen.field(state_topic, "online") is False, timeout=30, what="the STATE Will"
                )
                assert await bridge.wait() == -signal.SIGKILL
            else:
                bridge.process.send_signal(signal.SIGTERM)
                assert await bridge.wait() == 0, bridge.output()[-3000:]
                await seen.wait_for(lambda: seen.field(state_topic, "online") is False, what="STATE offline")
                log = bridge.output()
                assert "published STATE offline" in log and "Traceback" not in log, log[-3000:]
            death = seen.json(state_topic)
            # the death carries the birth's timestamp (Sparkplug 3.0), and it is retained
            assert death == {"online": False, "timestamp": online_ts}
            async with Observer(mqtt_broker.host, mqtt_broker.port, [state_topic]) as late:
                await late.wait_for(lambda: state_topic in late.last, what="retained STATE")
                assert late.json(state_topic)["online"] is False
        finally:
            bridge.close()
    import aiomqtt

    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as client:
        await client.publish(state_topic, b"", qos=1, retain=True)
