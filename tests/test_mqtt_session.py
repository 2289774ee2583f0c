"""The Sparkplug host MQTT session on real brokers: Will and STATE, own-offline repair, clean death,
MQTT 3.1.1 and 5, reconnect (STALE, STATE again, rebirth requests), TLS, user name and password."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from tests.bridge_helpers import Observer, TestEdgeNode, scalar_specs
from tests.services import MqttBroker
from uns_bridge.config import MqttConfig, NamespaceConfig, TlsConfig, UnsConfig
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.mqtt import HostSession
from uns_bridge.namespace import Namespace
from uns_bridge.pipeline import Pipeline
from uns_bridge.placement import Placer
from uns_bridge.uns.publisher import UnsPublisher
from uns_bridge.uns.sink import UnsSink


def _pipeline(
    host_id: str, group: str, role: str = "active", sink: UnsSink | None = None, placer: Placer | None = None
) -> Pipeline:
    placer = placer or Placer(Namespace.from_config(NamespaceConfig()), prefix="uns")
    host = Host(
        HostConfig(
            host_id=host_id, role=role, reorder_timeout_ms=200, rebirth_interval_ms=100, groups=(group,)
        )
    )  # type: ignore[arg-type]
    return Pipeline(host, placer, None, sink)


@contextlib.asynccontextmanager
async def running(session: HostSession) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(session.run())
    try:
        yield task
    finally:
        if not task.done():
            await asyncio.wait_for(session.stop(), 30)
            await task


async def _wait(condition: Any, timeout: float = 20, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_state_birth_repair_and_clean_death(
    mqtt_broker: MqttBroker, group_id: str, protocol: str
) -> None:
    host_id = f"sess-{uuid.uuid4().hex[:8]}"
    state = f"spBv1.0/STATE/{host_id}"
    config = MqttConfig(url=mqtt_broker.url, groups=(group_id,), protocol=protocol)  # type: ignore[arg-type]
    session = HostSession(config, _pipeline(host_id, group_id), host_id=host_id)
    async with Observer(mqtt_broker.host, mqtt_broker.port, [state, f"spBv1.0/{group_id}/#"]) as seen:
        async with running(session):
            await seen.wait_for(lambda: seen.field(state, "online") is True, what="STATE online")
            birth = seen.json(state)
            assert seen.log[0][0] == state, "STATE is the first thing the host publishes"
            # someone (a stale retained Will, another tool) says we are offline: the host repairs it
            async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as other:
                await other.publish(
                    state,
                    orjson.dumps({"online": False, "timestamp": birth["timestamp"]}),
                    qos=1,
                    retain=True,
                )
            await seen.wait_for(
                lambda: (
                    [orjson.loads(p)["online"] for t, p, _ in seen.log if t == state][-2:] == [False, True]
                ),
                what="online republished",
            )
        # clean shutdown: STATE offline with the birth's timestamp, published by us (retained)
        await seen.wait_for(lambda: seen.field(state, "online") is False, what="STATE offline")
        assert seen.json(state) == {"online": False, "timestamp": birth["timestamp"]}
    async with Observer(mqtt_broker.host, mqtt_broker.port, [state]) as late:
        await late.wait_for(lambda: state in late.last, what="retained STATE")
        assert late.json(state)["online"] is False
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as other:
            await other.publish(state, b"", qos=1, retain=True)


async def test_group_filter_only_sees_its_groups(mqtt_broker: MqttBroker, group_id: str) -> None:
    host_id = f"sess-{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(host_id, group_id, role="passive")
    session = HostSession(MqttConfig(url=mqtt_broker.url, groups=(group_id,)), pipeline, host_id=host_id)
    async with running(session):
        await asyncio.wait_for(session.connected.wait(), 10)
        other_group = f"{group_id}x"
        for group in (other_group, group_id):
            edge = TestEdgeNode(mqtt_broker.host, mqtt_broker.port, group, "N", "ours")
            await edge.connect()
            await edge.nbirth(scalar_specs(1)[:2])
            await edge.close()
        await _wait(lambda: pipeline.metrics.node_births >= 1, what="our group's birth")
        await asyncio.sleep(0.3)
        assert pipeline.metrics.node_births == 1
        assert pipeline.metrics.rebirth_requests == 0, "passive hosts never send commands"


def _private_mosquitto(**kwargs: Any) -> Any:
    from tests.private_servers import PrivateMosquitto, ServerError

    try:
        return PrivateMosquitto(**kwargs)
    except ServerError as exc:
        pytest.skip(str(exc))


async def test_reconnect_goes_stale_then_state_and_rebirth_requests(
    group_id: str, uns_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = _private_mosquitto(persistence=False)
    with broker:
        service = MqttBroker(broker.host, broker.port, "mosquitto")
        host_id = f"sess-{uuid.uuid4().hex[:8]}"
        state = f"spBv1.0/STATE/{host_id}"
        placer = Placer(Namespace.from_config(NamespaceConfig()), prefix=uns_prefix)
        uns = UnsConfig(prefix=uns_prefix, publish_window_ms=10)
        fast = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.3}
        sink = UnsSink(placer, UnsPublisher(MqttConfig(url=service.url, **fast), uns), uns)  # type: ignore[arg-type]
        await sink.start()
        await sink.publisher.start()  # type: ignore[attr-defined]
        pipeline = _pipeline(host_id, group_id, sink=sink, placer=placer)
        session = HostSession(
            MqttConfig(url=service.url, groups=(group_id,), **fast), pipeline, host_id=host_id
        )  # type: ignore[arg-type]
        specs = scalar_specs(1)[:3]
        async with running(session):
            await asyncio.wait_for(session.connected.wait(), 10)
            edge = TestEdgeNode(service.host, service.port, group_id, "N1", "ours", bd_seq=1)
            await edge.connect()
            await edge.nbirth(specs)
            topic = f"{placer.place(group_id, 'N1', None).uns_base}/{specs[0].name}"
            async with Observer(service.host, service.port, [f"{uns_prefix}/#"]) as seen:
                await seen.wait_for(lambda: seen.field(topic, "quality") == "GOOD", what="value on the UNS")
            await edge.close()
            broker.stop()
            await _wait(lambda: not session.is_connected, what="connection loss noticed")
            # counted once the host has made everything STALE (a moment after is_connected drops)
            await _wait(lambda: pipeline.metrics.connection_losses >= 1, what="the connection loss counted")
            assert pipeline.metrics.connection_losses == 1
            broker.start()
            async with Observer(
                service.host, service.port, [state, f"{uns_prefix}/#", f"spBv1.0/{group_id}/NCMD/#"]
            ) as seen:
                # after the reconnect: STATE online (new timestamp), the values STALE until a rebirth ...
                await seen.wait_for(lambda: seen.field(state, "online") is True, what="STATE online again")
                await seen.wait_for(
                    lambda: seen.field(topic, "quality") == "STALE", what="STALE after reconnect"
                )
                # ... which the active host asks for
                await seen.wait_for(lambda: f"spBv1.0/{group_id}/NCMD/N1" in seen.last, what="rebirth NCMD")
        await sink.close()
    # the broker going away is a warning, not an event-loop error (e.g. a write callback on a closed fd)
    loop_errors = [
        r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR
    ]
    assert loop_errors == []


async def test_tls_with_a_private_ca(tmp_path: Path, group_id: str) -> None:
    from tests.private_servers import make_test_ca

    ca, cert, key = make_test_ca(tmp_path / "ca")
    broker = _private_mosquitto(persistence=False, tls=(ca, cert, key))
    other_ca, _, _ = make_test_ca(tmp_path / "other")
    with broker:
        url = f"mqtts://127.0.0.1:{broker.port}"
        host_id = f"tls-{uuid.uuid4().hex[:8]}"
        good = HostSession(
            MqttConfig(url=url, tls=TlsConfig(ca_file=ca), groups=(group_id,)),
            _pipeline(host_id, group_id),
            host_id=host_id,
        )
        async with running(good):
            await asyncio.wait_for(good.connected.wait(), 15)
        bad = HostSession(
            MqttConfig(url=url, tls=TlsConfig(ca_file=other_ca), groups=(group_id,), reconnect_min_s=5),
            _pipeline(host_id, group_id),
            host_id=host_id,
        )
        async with running(bad):
            await asyncio.wait_for(bad.first_attempt_done.wait(), 15)
            assert not bad.is_connected
            assert bad.last_error is not None and "mqtt.tls.ca_file" in bad.last_error


async def test_user_name_and_password_file(tmp_path: Path, group_id: str) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("no mosquitto_passwd")
    users = tmp_path / "users"
    subprocess.run([passwd, "-b", "-c", str(users), "svc", "right horse"], check=True, capture_output=True)
    users.chmod(0o644)
    broker = _private_mosquitto(
        persistence=False, extra_config=f"allow_anonymous false\npassword_file {users}\n"
    )
    secret = tmp_path / "secret"
    secret.write_text("right horse\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    with broker:
        host_id = f"auth-{uuid.uuid4().hex[:8]}"
        config = MqttConfig(url=broker.url, username="svc", password_file=secret, groups=(group_id,))
        session = HostSession(config, _pipeline(host_id, group_id), host_id=host_id)
        async with running(session):
            await asyncio.wait_for(session.connected.wait(), 15)
        config = MqttConfig(
            url=broker.url, username="svc", password_file=wrong, groups=(group_id,), reconnect_min_s=5
        )
        refused = HostSession(config, _pipeline(host_id, group_id), host_id=host_id)
        async with running(refused):
            await asyncio.wait_for(refused.first_attempt_done.wait(), 15)
            assert not refused.is_connected
            assert (
                refused.last_error is not None
                and "credentials" in refused.last_error
                and "'svc'" in refused.last_error
            )
