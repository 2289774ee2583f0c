"""Ceiling processes: ``python -m tests.benchmarks._sinks subscribe|pipeline '<json args>'``.

* ``subscribe``: a minimal paho subscriber that only counts messages (raw broker throughput).
* ``pipeline``: the least a bridge must do: paho receive -> protobuf parse -> rows -> asyncpg binary
  COPY with two writer connections into a narrow table (the pipeline ceiling).

Each prints ``{"ready": true}`` once subscribed, then one JSON result line when ``expect`` messages
arrived or nothing arrived for ``idle_s`` seconds: counts plus wall-clock times of the first message
and of the last receive (subscribe) / last commit (pipeline). The pipeline then lingers ``linger_s``
seconds with its connections open, so their server backends' CPU can still be read.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import operator
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
BATCH_ROWS = 10_000
NARROW_TABLE = "bench_narrow"
#: sort key of a narrow row (metric id, time, value): the ceilings copy in metric order, as the bridge does
metric_first = operator.itemgetter(0)
NARROW_DDL = (
    f"create table if not exists {NARROW_TABLE} (metric_id int4 not null, time timestamptz not null, "
    f"value float8); create index if not exists {NARROW_TABLE}_metric_time on {NARROW_TABLE} (metric_id, time)"
)


class Receiver:
    """paho in its own thread; messages land in a deque (or are only counted)."""

    def __init__(self, host: str, port: int, topic: str, keep: bool, counter: str | None = None) -> None:
        from tests.benchmarks._wire import SharedCounter

        self.shared = SharedCounter(counter) if counter else None
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.queue: collections.deque[bytes] = collections.deque()
        self.subscribed = threading.Event()
        self.keep = keep
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sink-{time.time_ns()}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=0)
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        if self.keep:
            self.queue.append(message.payload)
        elif self.shared is not None:
            self.shared.set(self.count)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_ready(receiver: Receiver) -> None:
    if not receiver.subscribed.wait(30):
        raise SystemExit("not subscribed within 30 s")
    print(json.dumps({"ready": True}), flush=True)


def subscribe(args: dict[str, Any]) -> dict[str, Any]:
    receiver = Receiver(args["host"], args["port"], args["topic"], keep=False, counter=args.get("counter"))
    _wait_ready(receiver)
    expect, idle = args["expect"], args.get("idle_s", 3.0)
    deadline = time.time() + args.get("timeout_s", 120.0)
    while receiver.count < expect and time.time() < deadline:
        time.sleep(0.05)
        if receiver.count and time.time() - receiver.last > idle:
            break
    receiver.stop()
    return {"msgs": receiver.count, "first": receiver.first, "last": receiver.last}


async def _pipeline(args: dict[str, Any]) -> None:
    import asyncpg  # type: ignore[import-untyped]

    from tests.benchmarks._wire import SharedCounter, parse_module

    pb = parse_module()
    conns = [await asyncpg.connect(args["dsn"]) for _ in range(args.get("writers", 2))]
    await conns[0].execute(NARROW_DDL)
    receiver = Receiver(args["host"], args["port"], args["topic"], keep=True)
    shared = SharedCounter(args["counter"]) if args.get("counter") else None
    _wait_ready(receiver)
    queue: asyncio.Queue[list[tuple[int, dt.datetime, float]]] = asyncio.Queue(maxsize=8)
    committed = 0
    last_commit = 0.0

    async def writer(conn: Any) -> None:
        nonlocal committed, last_commit
        while True:
            rows = await queue.get()
            rows.sort(key=metric_first)  # metric order, as the bridge copies (see StoreWriter._write_samples)
            await conn.copy_records_to_table(
                NARROW_TABLE, records=rows, columns=("metric_id", "time", "value")
            )
            committed += len(rows)
            last_commit = time.time()
            queue.task_done()

    writers = [asyncio.create_task(writer(c)) for c in conns]
    expect, idle = args["expect"], args.get("idle_s", 3.0)
    rows: list[tuple[int, dt.datetime, float]] = []
    parsed = 0
    flush_at = time.perf_counter() + 0.2
    deadline = time.time() + args.get("timeout_s", 120.0)
    timedelta = dt.timedelta
    while True:
        incoming = receiver.queue
        if incoming:
            while incoming:
                payload = pb.Payload()
                payload.ParseFromString(incoming.popleft())
                parsed += 1
                if shared is not None:
                    shared.set(parsed)
                append = rows.append
                last_ms, when = -1, EPOCH
                for m in payload.metrics:
                    ms = m.timestamp
                    if ms != last_ms:  # metrics of one message mostly share their timestamp
                        last_ms, when = ms, EPOCH + timedelta(milliseconds=ms)
                    append((m.alias, when, m.double_value))
                if len(rows) >= BATCH_ROWS:
                    await queue.put(rows)
                    rows = []
                    flush_at = time.perf_counter() + 0.2
        else:
            if rows and time.perf_counter() >= flush_at:
                await queue.put(rows)
                rows = []
            if parsed >= expect or (parsed and time.time() - receiver.last > idle) or time.time() > deadline:
                break
            await asyncio.sleep(0.001)
    if rows:
        await queue.put(rows)
    await queue.join()
    for task in writers:
        task.cancel()
    receiver.stop()
    # answer while the connections (and so their server backends, whose CPU is being measured) still live
    print(
        json.dumps({"msgs": parsed, "rows": committed, "first": receiver.first, "last": last_commit}),
        flush=True,
    )
    await asyncio.sleep(args.get("linger_s", 5.0))
    for conn in conns:
        await conn.close()
    return None


def main(argv: list[str]) -> int:
    mode, args = argv[1], json.loads(argv[2])
    if mode == "subscribe":
        result = subscribe(args)
        print(json.dumps(result), flush=True)
    elif mode == "pipeline":
        asyncio.run(_pipeline(args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
