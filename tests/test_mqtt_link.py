"""Connection plumbing: broker URLs, credentials, TLS settings, backoff, readable errors, and the
flow-controlled receive buffer (backpressure instead of discarding) against the real broker."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError

from tests.services import MqttBroker
from uns_bridge.config import MqttConfig, TlsConfig
from uns_bridge.embedded import free_port
from uns_bridge.mqttlink import (
    Backoff,
    FlowClient,
    MqttSetupError,
    client_kwargs,
    explain_connect_error,
    parse_broker_url,
    read_password,
    tls_context,
)


def test_broker_urls() -> None:
    assert str(parse_broker_url("mqtt://broker:1884")) == "mqtt://broker:1884"
    plain = parse_broker_url("mqtt://10.0.0.1")
    assert (plain.host, plain.port, plain.tls) == ("10.0.0.1", 1883, False)
    secure = parse_broker_url("mqtts://broker.plant.local")
    assert (secure.port, secure.tls) == (8883, True)
    with_user = parse_broker_url("mqtt://svc%40plant:s3cr%2Ft@h:1")
    assert (with_user.username, with_user.password) == ("svc@plant", "s3cr/t")
    assert parse_broker_url("localhost:1999").port == 1999
    for bad, why in [("http://h", "scheme"), ("mqtt://:12", "no host"), ("mqtt://h:99999", "(?i)port")]:
        with pytest.raises(MqttSetupError, match=why):
            parse_broker_url(bad)


def test_password_from_config_then_file_then_url(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    address = parse_broker_url("mqtt://u:from-url@h")
    assert read_password(MqttConfig(password="direct", password_file=secret), address) == "direct"
    assert read_password(MqttConfig(password_file=secret), address) == "from-file"
    assert read_password(MqttConfig(), address) == "from-url"
    with pytest.raises(MqttSetupError, match=r"mqtt\.password_file"):
        read_password(MqttConfig(password_file=tmp_path / "missing"), address)


def test_client_options_per_protocol_and_credentials(tmp_path: Path) -> None:
    will = aiomqtt.Will("spBv1.0/STATE/h", b"{}", 1, True)
    v311 = client_kwargs(MqttConfig(url="mqtt://h:1"), client_id="c", will=will)
    assert v311["protocol"] == aiomqtt.ProtocolVersion.V311 and v311["clean_session"] is True
    assert v311["will"] is will and "username" not in v311 and v311["tls_context"] is None
    v5 = client_kwargs(
        MqttConfig(url="mqtt://h:1", protocol="5", username="svc", password="pw"), client_id="c", will=None
    )
    assert v5["protocol"] == aiomqtt.ProtocolVersion.V5 and v5["clean_start"] is True
    assert (v5["username"], v5["password"]) == ("svc", "pw")
    with pytest.raises(MqttSetupError, match=r"mqtt\.url"):
        client_kwargs(MqttConfig(), client_id="c", will=None)


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    address = parse_broker_url("mqtts://h")
    assert tls_context(MqttConfig(), address) is not None  # system CAs
    assert tls_context(MqttConfig(), parse_broker_url("mqtt://h")) is None
    with pytest.raises(MqttSetupError, match=r"mqtt\.tls\.ca_file .*no such file"):
        tls_context(MqttConfig(tls=TlsConfig(ca_file=tmp_path / "nope.crt")), address)
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    with pytest.raises(MqttSetupError, match=r"mqtt\.tls"):
        tls_context(MqttConfig(tls=TlsConfig(ca_file=garbage)), address)
    with pytest.raises(MqttSetupError, match="cert_file is not"):
        tls_context(MqttConfig(tls=TlsConfig(key_file=garbage)), address)
    insecure = tls_context(MqttConfig(tls=TlsConfig(insecure=True)), address)
    assert insecure is not None and insecure.check_hostname is False


def test_backoff_doubles_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays), "jitter: delays differ"
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_connect_errors_say_what_to_change() -> None:
    config = MqttConfig(url="mqtt://h:1", username="svc")
    refused = explain_connect_error(aiomqtt.MqttError("[Errno 111] Connection refused"), "mqtt://h:1", config)
    assert "connection refused" in refused and "UNS_MQTT_URL" in refused
    auth = explain_connect_error(MqttConnectError(4), "mqtt://h:1", config)
    assert "credentials" in auth and "'svc'" in auth and "password" in auth
    tls = explain_connect_error(
        aiomqtt.MqttError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "mqtts://h:1", config
    )
    assert "mqtt.tls.ca_file" in tls
    dns = explain_connect_error(
        aiomqtt.MqttError("[Errno -2] Name or service not known"), "mqtt://x:1", config
    )
    assert "resolve" in dns


async def test_refused_connection_is_explained() -> None:
    port = free_port()
    client = FlowClient(**client_kwargs(MqttConfig(url=f"mqtt://127.0.0.1:{port}"), client_id="x", will=None))
    with pytest.raises(aiomqtt.MqttError) as caught:
        await client.__aenter__()
    assert "connection refused" in explain_connect_error(
        caught.value, f"mqtt://127.0.0.1:{port}", MqttConfig()
    )


async def test_full_receive_buffer_pauses_reading_and_loses_nothing(mqtt_broker: MqttBroker) -> None:
    """A consumer that stops: the buffer stops at its limit (reading paused), then everything arrives."""
    topic = f"test/flow/{uuid.uuid4().hex}"
    limit, total = 20, 400
    config = MqttConfig(url=mqtt_broker.url)
    client = FlowClient(
        receive_limit=limit, **client_kwargs(config, client_id=f"flow-{uuid.uuid4().hex[:6]}", will=None)
    )
    await client.__aenter__()
    try:
        await client.subscribe(topic, qos=1)
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, max_inflight_messages=1000) as sender:
            await asyncio.gather(*(sender.publish(topic, str(i).encode(), qos=1) for i in range(total)))
            # nobody consumes: the buffer fills up to the limit and reading pauses
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not client.paused and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert client.paused and client.paused_count >= 1
            await asyncio.sleep(0.3)
            # one readiness event can finish a packet already begun, no more than a few past the limit
            assert limit <= len(client.buffer) <= limit + 64
            received: list[int] = []
            while len(received) < total:
                item = await asyncio.wait_for(client.next_message(), 10)
                assert item is not None
                received.append(int(item.payload))
                assert len(client.buffer) <= limit + 64
            assert sorted(received) == list(range(total))
            assert client.paused_count >= 2, "paused again as the backlog kept coming"
    finally:
        await client.__aexit__(None, None, None)
