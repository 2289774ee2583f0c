"""How we open MQTT connections: broker URL, TLS, credentials, reconnect delays, readable errors.

Shared by the Sparkplug host session (:mod:`uns_bridge.mqtt`) and the UNS publisher
(:mod:`uns_bridge.uns.publisher`), which each hold their own connection.

* URLs: ``mqtt://host[:port]`` (also ``tcp://``; port 1883) and ``mqtts://host[:port]`` (also
  ``ssl://``, ``tls://``; port 8883). A user name may be given in the URL; a password in the URL is
  accepted (for environment variables) but the configuration's ``password`` / ``password_file`` are
  the documented places.
* :class:`FlowClient` is an :class:`aiomqtt.Client` whose incoming PUBLISH messages go to a bounded
  in-memory buffer. When the buffer reaches its limit, the client stops reading its socket (TCP then
  pushes back to the broker) and resumes when the consumer has drained half of it: backpressure
  instead of the silent discarding a full ``aiomqtt`` queue does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho

from uns_bridge.config import MqttConfig

_PLAIN_SCHEMES = {"mqtt": 1883, "tcp": 1883}
_TLS_SCHEMES = {"mqtts": 8883, "ssl": 8883, "tls": 8883}


class MqttSetupError(ValueError):
    """The MQTT settings cannot work (bad URL, unreadable certificate or password file)."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host:port`` or ``mqtts://host:port`` (user info optional) -> :class:`BrokerAddress`."""
    try:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        port = parts.port
    except ValueError as exc:
        raise MqttSetupError(f"mqtt.url {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _PLAIN_SCHEMES and scheme not in _TLS_SCHEMES:
        raise MqttSetupError(f"mqtt.url {url!r}: scheme must be mqtt:// or mqtts://, not {scheme}://")
    if not parts.hostname:
        raise MqttSetupError(f"mqtt.url {url!r}: no host name")
    tls = scheme in _TLS_SCHEMES
    default_port = _TLS_SCHEMES.get(scheme) or _PLAIN_SCHEMES[scheme]
    return BrokerAddress(
        host=parts.hostname,
        port=port or default_port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def read_password(config: MqttConfig, address: BrokerAddress | None = None) -> str | None:
    """The password: ``mqtt.password`` (e.g. from ``UNS_MQTT_PASSWORD``), else ``mqtt.password_file``, else the URL's."""
    if config.password:
        return config.password
    if config.password_file is not None:
        try:
            return config.password_file.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise MqttSetupError(
                f"mqtt.password_file {config.password_file}: {exc.strerror or exc}"
            ) from None
    return address.password if address is not None else None


def _readable(path: Path, key: str) -> str:
    if not path.is_file():
        raise MqttSetupError(f"{key} {path}: no such file")
    return str(path)


def tls_context(config: MqttConfig, address: BrokerAddress) -> ssl.SSLContext | None:
    """The TLS context for ``mqtts://`` or when a CA / client certificate is configured; else ``None``."""
    tls = config.tls
    if not (address.tls or tls.ca_file or tls.cert_file):
        return None
    try:
        ca = _readable(tls.ca_file, "mqtt.tls.ca_file") if tls.ca_file else None
        context = ssl.create_default_context(cafile=ca)
        if tls.cert_file:
            cert = _readable(tls.cert_file, "mqtt.tls.cert_file")
            key = _readable(tls.key_file, "mqtt.tls.key_file") if tls.key_file else None
            context.load_cert_chain(cert, key)
        elif tls.key_file:
            raise MqttSetupError("mqtt.tls.key_file is set but mqtt.tls.cert_file is not")
    except ssl.SSLError as exc:
        raise MqttSetupError(f"mqtt.tls: cannot load certificates: {exc.reason or exc}") from None
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client_kwargs(config: MqttConfig, *, client_id: str, will: aiomqtt.Will | None) -> dict[str, Any]:
    """Keyword arguments for :class:`aiomqtt.Client` from the configuration.

    MQTT 3.1.1 uses a clean session; MQTT 5 a clean start with session expiry 0 (paho's default).
    """
    if not config.url:
        raise MqttSetupError("mqtt.url is not set (UNS_MQTT_URL=mqtt://host:1883)")
    address = parse_broker_url(config.url)
    kwargs: dict[str, Any] = {
        "hostname": address.host,
        "port": address.port,
        "identifier": client_id,
        "keepalive": config.keepalive_s,
        "will": will,
        "tls_context": tls_context(config, address),
        "timeout": 10.0,
    }
    if config.protocol == "5":
        kwargs["protocol"] = aiomqtt.ProtocolVersion.V5
        kwargs["clean_start"] = True
    else:
        kwargs["protocol"] = aiomqtt.ProtocolVersion.V311
        kwargs["clean_session"] = True
    username = config.username or address.username
    if username:
        kwargs["username"] = username
        kwargs["password"] = read_password(config, address)
    return kwargs


def explain_connect_error(exc: BaseException, where: str, config: MqttConfig) -> str:
    """A sentence that says what went wrong connecting to ``where`` and what to change."""
    text = str(exc)
    lower = text.lower()
    rc = getattr(exc, "rc", None)
    rc_value = getattr(rc, "value", rc)
    who = f"user {config.username!r}" if config.username else "anonymous clients"
    if rc_value in (4, 134) or "bad user name or password" in lower or "bad username" in lower:
        return (
            f"MQTT broker {where} rejected the credentials of {who}: set mqtt.username and "
            "UNS_MQTT_PASSWORD or mqtt.password_file"
        )
    if rc_value in (5, 135) or "not authori" in lower:
        return (
            f"MQTT broker {where} refused the credentials of {who} (not authorised): check mqtt.username, "
            "UNS_MQTT_PASSWORD / mqtt.password_file and the broker's ACL"
        )
    if "certificate verify failed" in lower or "certificate_verify_failed" in lower:
        return (
            f"TLS to {where} failed: the broker's certificate is not trusted ({text}); set mqtt.tls.ca_file "
            "to the CA that signed it"
        )
    if "wrong version number" in lower or "record layer failure" in lower or "ssl" in lower:
        return f"TLS to {where} failed ({text}): is this port a TLS listener? use mqtt:// for plain TCP"
    if "connection refused" in lower or "errno 111" in lower:
        return f"cannot reach MQTT broker {where}: connection refused; is it running? (set UNS_MQTT_URL)"
    if "name or service not known" in lower or "nodename nor servname" in lower or "errno -2" in lower:
        return f"cannot resolve the MQTT broker host in {where}: check mqtt.url / UNS_MQTT_URL"
    if "timed out" in lower:
        return f"MQTT broker {where} did not answer in time ({text})"
    return f"MQTT connection to {where} failed: {text or type(exc).__name__}"


class Backoff:
    """Exponential reconnect delays with jitter: ``min_s``, doubling up to ``max_s``, each drawn in [d/2, d]."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = max(min_s, 0.001)
        self.max_s = max(max_s, self.min_s)
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling: float = min(self.max_s, self.min_s * float(2**self._attempt))
        self._attempt = min(self._attempt + 1, 64)
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self._attempt = 0


@dataclass(slots=True)
class Incoming:
    """One received PUBLISH: topic, payload, the receive time (ms UTC) and its flags."""

    topic: str
    payload: bytes
    received_ms: int
    qos: int
    retain: bool


class BufferedSocket:
    """A socket whose ``recv`` is served from one large read.

    paho reads a packet with one ``recv`` for its type byte, one per remaining-length byte and one for
    the rest: three to five system calls per message, the largest single cost of receiving small
    messages. Wrapped in this, one ``recv`` of up to :attr:`CHUNK` bytes feeds many packets.
    :meth:`pending` counts the bytes held here (plus a TLS socket's own), so the reader keeps going
    while buffered packets remain, which the selector cannot see. Everything else is the socket's.
    """

    CHUNK = 256 * 1024

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.send = sock.send
        self._inner_pending = getattr(sock, "pending", None)
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        data, pos = self._data, self._pos
        if pos >= len(data):
            fresh: bytes = self.sock.recv(max(size, self.CHUNK))
            if len(fresh) <= size:
                return fresh
            self._data, self._pos = fresh, size
            return fresh[:size]
        end = pos + size
        if end >= len(data):
            self._data, self._pos = b"", 0
            return data[pos:] if pos else data
        self._pos = end
        return data[pos:end]

    def pending(self) -> int:
        held = len(self._data) - self._pos
        return held + (self._inner_pending() if self._inner_pending is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class FlowClient(aiomqtt.Client):
    """An aiomqtt client with a bounded receive buffer that pauses socket reads when full.

    Use :meth:`next_message` (not ``messages``). :attr:`lost` is set when the connection drops.
    Relies on aiomqtt 2.x's socket callbacks (``_on_socket_open`` / ``_on_message``).
    """

    def __init__(self, *args: Any, receive_limit: int = 10_000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_calls_threshold = 1 << 30
        self.receive_limit = max(receive_limit, 1)
        self.buffer: deque[Incoming] = deque()
        self.lost = asyncio.Event()
        self.lost_reason: BaseException | None = None
        self.paused_count = 0
        self._wakeup = asyncio.Event()
        self._fd: int | None = None
        self._reader: Any = None
        self._paused = False
        self._received = 0
        #: mid -> (topic, payload) of :meth:`publish_nowait` messages not yet acknowledged (QoS > 0) or written
        self.unacked: dict[int, tuple[str, bytes]] = {}
        self._acked = asyncio.Event()
        # paho's dispatch walks its per-topic callback tree and takes two locks per message; we
        # register no per-topic callbacks, so every message goes straight to our buffer
        self._client._handle_on_message = self._dispatch_message

    def _dispatch_message(self, message: paho.MQTTMessage) -> None:
        self._on_message(self._client, None, message)

    # --- paho callbacks (all on the event loop thread except socket open during connect) ---
    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._received += 1
        self.buffer.append(
            Incoming(message.topic, message.payload, time.time_ns() // 1_000_000, message.qos, message.retain)
        )
        self._wakeup.set()
        if not self._paused and len(self.buffer) >= self.receive_limit:
            self._pause()

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        super()._on_disconnect(*args, **kwargs)
        self._mark_lost(None)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, *args: Any) -> None:
        super()._on_publish(client, userdata, mid, *args)
        if self.unacked.pop(mid, None) is not None:
            self._acked.set()

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho calls this right after creating the socket, before it writes CONNECT or reads anything
        if not isinstance(sock, BufferedSocket):
            client._sock = BufferedSocket(sock)

        def read() -> None:
            try:
                # several packets per readiness event while they keep arriving and there is room
                for _ in range(64):
                    before = self._received
                    rc = client.loop_read()
                    if rc != paho.MQTT_ERR_SUCCESS:
                        raise aiomqtt.MqttCodeError(rc, "connection lost")
                    if self._paused:
                        break  # resuming calls this again for what TLS may have buffered
                    pending = getattr(client.socket(), "pending", None)
                    if pending is not None and pending() > 0:
                        continue  # decrypted bytes waiting that the selector cannot see
                    if self._received == before:
                        break
                else:
                    buffered = getattr(client.socket(), "pending", None)
                    if buffered is not None and buffered() > 0:
                        # packets already read from the socket: the selector will not report them
                        self._loop.call_soon(read)
            except Exception as exc:
                self._mark_lost(exc)
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def opened() -> None:
            self._fd = sock.fileno()
            self._reader = read
            if not self._paused:
                self._loop.add_reader(self._fd, read)
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._loop.call_soon_threadsafe(opened)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # aiomqtt's, less a race: it schedules add_writer with the fd number taken now, so when the
        # broker goes away and the socket closes first, asyncio logs EBADF as an ERROR. The socket is
        # asked for its fd when the registration runs instead.
        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken pipe: the connection is gone
                self._mark_lost(exc)
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            fd = sock.fileno()
            if fd > -1:
                with contextlib.suppress(OSError, ValueError):
                    self._loop.add_writer(fd, write)

        self._loop.call_soon_threadsafe(register)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd > -1:
            self._loop.remove_writer(fd)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd > -1:
            self._loop.remove_reader(fd)
        self._fd = None
        if self._misc_task is not None and not self._misc_task.done():
            self._loop.call_soon_threadsafe(self._misc_task.cancel)

    # --- flow control ---
    def _pause(self) -> None:
        self._paused = True
        self.paused_count += 1
        if self._fd is not None:
            self._loop.remove_reader(self._fd)

    def _resume(self) -> None:
        self._paused = False
        if self._fd is not None and self._reader is not None:
            self._loop.add_reader(self._fd, self._reader)
            # data may already sit in paho's or the TLS layer's buffers
            self._loop.call_soon(self._reader)

    def _mark_lost(self, exc: BaseException | None) -> None:
        if self.lost_reason is None:
            self.lost_reason = exc
        self.lost.set()
        self._wakeup.set()
        self._acked.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def take(self) -> Incoming | None:
        """The next buffered message without waiting, or ``None``."""
        if not self.buffer:
            return None
        item = self.buffer.popleft()
        if self._paused and len(self.buffer) <= self.receive_limit // 2:
            self._resume()
        return item

    async def next_message(self) -> Incoming | None:
        """The next message; ``None`` once the connection is lost and the buffer is empty."""
        while True:
            item = self.take()
            if item is not None:
                return item
            if self.lost.is_set():
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def resume_reading(self) -> None:
        """Read the socket again regardless of the buffer (used while shutting down)."""
        if self._paused:
            self._resume()

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Queue a publish without waiting for its acknowledgement (order with other publishes kept)."""
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish to {topic}")
        if not info.is_published():
            self.unacked[info.mid] = (topic, payload)

    async def wait_unacked(self, at_most: int) -> None:
        """Wait until no more than ``at_most`` :meth:`publish_nowait` messages await acknowledgement.

        Raises :class:`aiomqtt.MqttError` when the connection is lost meanwhile.
        """
        while len(self.unacked) > at_most:
            if self.lost.is_set():
                raise aiomqtt.MqttError("connection lost with messages unacknowledged")
            self._acked.clear()
            await self._acked.wait()


async def close_quietly(client: aiomqtt.Client, timeout: float = 5.0) -> None:
    """Disconnect ``client`` (sending DISCONNECT when still connected), never raising."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.__aexit__(None, None, None), timeout)
    # the disconnect reason was reported already; mark it retrieved so asyncio does not log it again
    for name in ("_disconnected", "_connected"):
        future = getattr(client, name, None)
        if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
            future.exception()
