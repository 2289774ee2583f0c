"""A minimal Sparkplug B edge node for fault tests: every NDATA carries one counted sample.

Written on the wire builder in ``tests/fuzz/wire.py`` (independent of the codec under test). The node
publishes NBIRTH (bdSeq, ``Node Control/Rebirth``, metric ``counter`` Int64 alias 1), then NDATA with
``counter = <sample id>`` and increasing seq, answers a rebirth NCMD with a new NBIRTH, and has its
NDEATH as the MQTT Will. It keeps the ids it handed to the broker (PUBACK received) in :attr:`acked`.
"""

from __future__ import annotations

import collections
import threading
import time

import paho.mqtt.client as paho

from tests.fuzz.wire import f_bytes, f_varint

INT64, BOOLEAN = 4, 11


def _metric(
    name: str | None, alias: int, datatype: int | None, value_field: int, value: int, ts: int
) -> bytes:
    body = b""
    if name is not None:
        body += f_bytes(1, name.encode())
    body += f_varint(2, alias) + f_varint(3, ts)
    if datatype is not None:
        body += f_varint(4, datatype)
    return f_bytes(2, body + f_varint(value_field, value))


class EdgeNode:
    """``EdgeNode(host, port, group, node)``; :meth:`start`, :meth:`send` (one sample), :meth:`stop`."""

    def __init__(self, host: str, port: int, group: str, node: str, *, qos: int = 1) -> None:
        self.host, self.port, self.group, self.node, self.qos = host, port, group, node, qos
        self.bd_seq = 0
        self.seq = 0
        self.births = 0
        self.rebirth_requests = 0
        self.sent: list[int] = []  # ids published (maybe not yet acknowledged by the broker)
        self._acked: list[int] = []  # ids the broker acknowledged (QoS 1 PUBACK); see :attr:`acked`
        self._pending: dict[int, int] = {}  # mid -> sample id
        # PUBACK mids, appended by paho's thread without taking ``_lock``: paho calls ``on_publish``
        # holding its own out-message mutex, which ``send`` needs while holding ``_lock``
        self._acks: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"edge-{group}-{node}")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1.0)
        self._set_will()

    def _topic(self, kind: str) -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}"

    def _bd_seq_metric(self) -> bytes:
        return f_bytes(2, f_bytes(1, b"bdSeq") + f_varint(4, INT64) + f_varint(11, self.bd_seq))

    def _bd_seq_payload(self) -> bytes:
        return f_varint(1, int(time.time() * 1000)) + self._bd_seq_metric()

    def _set_will(self) -> None:
        self.client.will_set(self._topic("NDEATH"), self._bd_seq_payload(), qos=1, retain=False)

    def _on_connect(self, client: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        client.subscribe(f"spBv1.0/{self.group}/NCMD/{self.node}", qos=1)
        self._birth()
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self._connected.clear()
        with self._lock:
            self.bd_seq = (self.bd_seq + 1) % 256
            self._set_will()

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        self._acks.append(mid)

    def _settle_acks(self) -> None:
        """Move acknowledged mids to :attr:`acked` (under ``_lock``, where ``send`` records mids)."""
        while self._acks:
            sample = self._pending.pop(self._acks.popleft(), None)
            if sample is not None:
                self._acked.append(sample)

    @property
    def acked(self) -> list[int]:
        """The ids the broker acknowledged (QoS 1 PUBACK)."""
        with self._lock:
            self._settle_acks()
            return list(self._acked)

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        if b"Node Control/Rebirth" in message.payload:
            self.rebirth_requests += 1
            self._birth()

    def _birth(self) -> None:
        with self._lock:
            self.seq = 0
            ts = int(time.time() * 1000)
            payload = (
                f_varint(1, ts)
                + f_varint(3, 0)
                + self._bd_seq_metric()
                + f_bytes(2, f_bytes(1, b"Node Control/Rebirth") + f_varint(4, BOOLEAN) + f_varint(14, 0))
                + _metric("counter", 1, INT64, 11, self.sent[-1] if self.sent else 0, ts)
            )
            self.client.publish(self._topic("NBIRTH"), payload, qos=self.qos)
            self.births += 1

    def start(self, timeout: float = 30) -> None:
        self.client.connect(self.host, self.port, keepalive=5)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"edge node could not connect to {self.host}:{self.port}")

    def send(self, sample_id: int) -> bool:
        """Publish one NDATA with ``counter = sample_id``; False when not connected (nothing sent)."""
        if not self._connected.is_set():
            return False
        with self._lock:
            self._settle_acks()  # before paho can reuse an acknowledged mid
            self.seq = (self.seq + 1) % 256
            ts = int(time.time() * 1000)
            payload = f_varint(1, ts) + f_varint(3, self.seq) + _metric(None, 1, None, 11, sample_id, ts)
            info = self.client.publish(self._topic("NDATA"), payload, qos=self.qos)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return False
            self.sent.append(sample_id)
            self._pending[info.mid] = sample_id
        return True

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
