"""Worker processes (``host.workers``, host rule W1): the shards of the host core together behave
exactly like one host; the supervisor starts, restarts and stops real processes; and the real bridge
run as two workers stores everything, also when one worker is SIGKILLed and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.fault_live import Load, Recorder, stored_rows, tally, until, until_stored
from tests.host_messages import T0, m, nbirth, ndeath, payload, topic
from tests.services import MqttBroker
from tests.store_helpers import T0 as STORE_T0
from tests.store_helpers import defined, store, stored_values
from tests.test_bridge_process import BridgeProcess, _env
from uns_bridge.app import leftover_forwarders
from uns_bridge.config import Config, ConfigError, HostSettings, SpoolConfig, load_config
from uns_bridge.host import effects as fx
from uns_bridge.host.effects import MetricInfo, Sample, Samples
from uns_bridge.host.host import Host, HostConfig, shard_of
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.store.forward import Forwarder
from uns_bridge.store.spool import Spool
from uns_bridge.workers import (
    Supervisor,
    WorkerSetupError,
    check_workers,
    leftover_spools,
    worker_config,
    worker_shard,
)

WORKERS = 3


# ------------------------------------------------------------------------------ the host core (W1)
def _hosts() -> tuple[Host, list[Host]]:
    def make(shard: tuple[int, int] | None) -> Host:
        return Host(HostConfig(host_id="h1", reorder_timeout_ms=500, rebirth_interval_ms=1_000, shard=shard))

    return make(None), [make((i, WORKERS)) for i in range(WORKERS)]


def traffic() -> Iterator[tuple[str, bytes, int]]:
    """Births, data, a gap, a reorder, data before birth, deaths, an invalid topic and our own STATE,
    over 24 edge nodes in two groups (so every shard owns several)."""
    now = T0
    nodes = [(group, f"N{k}") for group in ("G1", "G2") for k in range(12)]
    for group, node in nodes:
        now += 1
        yield topic("NBIRTH", node=node, group=group), nbirth(0, 1), now
        yield topic("DBIRTH", "D1", node, group), payload([m("Speed", 7, T.Int32, 1)], 1), now
    for i in range(1, 4):
        for group, node in nodes:
            now += 1
            yield (
                topic("NDATA", node=node, group=group),
                payload([m(None, 1, T.Double, float(i))], 1 + i),
                now,
            )
            yield topic("DDATA", "D1", node, group), payload([m(None, 7, T.Int32, i)], (1 + i) % 256), now
    for group, node in nodes[::3]:  # a gap: seq 9 never comes
        now += 1
        yield topic("NDATA", node=node, group=group), payload([m(None, 1, T.Double, 9.5)], 10), now
    for group, node in nodes[1::3]:  # a reorder: 10 before 9
        now += 1
        yield topic("NDATA", node=node, group=group), payload([m(None, 1, T.Double, 10.0)], 10), now
        yield topic("NDATA", node=node, group=group), payload([m(None, 1, T.Double, 9.0)], 9), now
    for k in range(6):  # nodes nobody has seen born
        now += 1
        yield topic("NDATA", node=f"X{k}", group="G1"), payload([m(None, 1, T.Double, 1.0)], 5), now
    for group, node in nodes[2::4]:
        now += 1
        yield topic("NDEATH", node=node, group=group), ndeath(1), now
    yield "spBv1.0/G1/NOPE/N1", b"\x00", now + 1
    yield "spBv1.0/STATE/h1", b'{"online": false, "timestamp": 1}', now + 2


def _normal(effects: list[fx.Effect]) -> list[str]:
    """Effects compared across hosts by their text (MetricInfo compares by identity)."""
    return sorted(repr(e) for e in effects)


def test_shards_together_are_one_host() -> None:
    single, shards = _hosts()
    assert single.will(T0) is not None
    wills = [shard.will(T0) for shard in shards]
    assert wills[0] is not None and wills[0].topic == "spBv1.0/STATE/h1"
    assert wills[1:] == [None] * (WORKERS - 1)  # W1: only worker 0 registers the STATE Will
    states = [[e for e in shard.connected(T0) if isinstance(e, fx.Publish)] for shard in shards]
    single.connected(T0)
    assert [len(s) for s in states] == [1] + [0] * (WORKERS - 1)
    assert states[0][0].topic == "spBv1.0/STATE/h1"

    owners: set[int] = set()
    last = T0
    for message_topic, raw, now in traffic():
        last = now
        expected = single.receive(message_topic, raw, now)
        parts = [shard.receive(message_topic, raw, now) for shard in shards]
        busy = [i for i, part in enumerate(parts) if part]
        assert len(busy) <= 1, f"{message_topic} handled by workers {busy}"
        assert _normal([e for part in parts for e in part]) == _normal(expected), message_topic
        if expected and "/STATE/" not in message_topic and "/NOPE/" not in message_topic:
            group, _kind, node = message_topic.split("/")[1:4]
            assert busy == [shard_of(group, node, WORKERS)]
            owners.add(busy[0])
    assert owners == set(range(WORKERS))
    for later in (last + 600, last + 2_000, last + 5_000):  # reorder timeouts, rebirth requests
        expected = single.tick(later)
        assert _normal([e for shard in shards for e in shard.tick(later)]) == _normal(expected)
        assert expected or later != last + 600
    disconnect = [shard.disconnecting(last + 6_000) for shard in shards]
    single_disconnect = single.disconnecting(last + 6_000)
    assert _normal([e for part in disconnect for e in part]) == _normal(single_disconnect)
    assert [sum(isinstance(e, fx.Publish) for e in part) for part in disconnect] == [1] + [0] * (WORKERS - 1)


def test_shard_of_is_stable_and_spreads() -> None:
    # crc32 of the UTF-8 "group/node": the same in every process and every run
    assert shard_of("G", "N", 1) == 0
    assert shard_of("Plant1", "Edge1", 2) == shard_of("Plant1", "Edge1", 2)
    counts = [0, 0, 0, 0]
    for k in range(4_000):
        counts[shard_of("Plant", f"Edge{k}", 4)] += 1
    assert min(counts) > 800, counts  # even within a few per cent


# -------------------------------------------------------------------------------- configuration
def test_worker_shard_from_the_environment() -> None:
    assert worker_shard({}) is None
    assert worker_shard({"UNS_WORKER": "1/4"}) == (1, 4)
    for bad in ("4/4", "x/2", "1", "-1/2"):
        with pytest.raises(WorkerSetupError, match="UNS_WORKER"):
            worker_shard({"UNS_WORKER": bad})


def test_worker_config_separates_what_must_not_be_shared(tmp_path: Path) -> None:
    config = load_config(
        None,
        environ={
            "UNS_HOST_WORKERS": "2",
            "UNS_SPOOL_DIR": str(tmp_path / "spool"),
            "UNS_HTTP_PORT": "9100",
            "UNS_MQTT_CLIENT_ID": "bridge",
        },
    )
    assert config.host.workers == 2
    one = worker_config(config, 1)
    assert one.spool.dir == tmp_path / "spool" / "worker-1"
    assert one.http.port == 9101
    assert one.mqtt.client_id == "bridge-w1"
    assert worker_config(config, 0).spool.dir != one.spool.dir


def test_workers_need_external_services() -> None:
    config = load_config(None, environ={"UNS_HOST_WORKERS": "2"})
    with pytest.raises(WorkerSetupError, match=r"mqtt\.url and database\.url"):
        check_workers(config, demo=False)
    full = load_config(
        None,
        environ={
            "UNS_HOST_WORKERS": "2",
            "UNS_MQTT_URL": "mqtt://127.0.0.1:1883",
            "UNS_DATABASE_URL": "postgresql://127.0.0.1/x",
        },
    )
    check_workers(full, demo=False)
    with pytest.raises(WorkerSetupError, match="--demo"):
        check_workers(full, demo=True)
    check_workers(Config(host=HostSettings(workers=1)), demo=True)


@pytest.mark.parametrize("value", ["0", "65"])
def test_worker_count_is_bounded(value: str) -> None:
    with pytest.raises(ConfigError, match=r"host\.workers"):
        load_config(None, environ={"UNS_HOST_WORKERS": value})


# ----------------------------------------------------------------------------------- supervisor
def _script(body: str) -> list[str]:
    return [sys.executable, "-c", body]


@pytest.mark.timeout(60)
async def test_supervisor_restarts_a_dead_worker_and_stops_all(tmp_path: Path) -> None:
    marks = tmp_path / "starts"
    marks.mkdir()
    # each start leaves a file named after UNS_WORKER and its pid; worker 1 dies at its first start
    body = (
        "import os, sys, time, pathlib\n"
        f"d = pathlib.Path({str(marks)!r})\n"
        "w = os.environ['UNS_WORKER'].replace('/', 'of')\n"
        "first = not list(d.glob(w + '-*'))\n"
        "(d / f'{w}-{os.getpid()}').touch()\n"
        "if w == '1of2' and first: sys.exit(1)\n"
        "time.sleep(120)\n"
    )
    supervisor = Supervisor(_script(body), 2)
    running = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: len(list(marks.glob("1of2-*"))) == 2, 30, "worker 1 restarted")
        await until(lambda: len(supervisor.pids()) == 2, 10, "both workers running")
        assert supervisor.restarts == 1
        assert len(list(marks.glob("0of2-*"))) == 1
        pids = supervisor.pids()
        # each worker in a session of its own: a terminal's Ctrl-C reaches the supervisor alone
        assert all(os.getsid(pid) == pid != os.getsid(0) for pid in pids)
    finally:
        supervisor.stop()
        code = await asyncio.wait_for(running, 45)
    assert code == 0
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


@pytest.mark.timeout(60)
async def test_supervisor_gives_up_on_a_configuration_error() -> None:
    supervisor = Supervisor(
        _script(
            "import os, sys, time\nos.environ['UNS_WORKER'].startswith('1') and sys.exit(2)\ntime.sleep(60)"
        ),
        2,
    )
    assert await asyncio.wait_for(supervisor.run(), 45) == 2
    assert supervisor.restarts == 0
    assert supervisor.pids() == []


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.timeout(60)
async def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    worker = (
        f"import os, pathlib, time; (pathlib.Path({str(pids)!r}) / str(os.getpid())).touch(); time.sleep(120)"
    )
    supervisor_code = (
        "import asyncio, sys\n"
        "from uns_bridge.workers import Supervisor\n"
        f"asyncio.run(Supervisor([sys.executable, '-c', {worker!r}], 2).run())\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", supervisor_code])
    try:
        await until(lambda: len(list(pids.iterdir())) == 2, 30, "two workers started")
        workers = [psutil.Process(int(p.name)) for p in pids.iterdir()]
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == [], "a worker outlived its SIGKILLed supervisor"
        assert len(gone) == 2
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
        for p in pids.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.name), signal.SIGKILL)


# ------------------------------------------------------------------- the real bridge, two workers
def _nodes_for_both_workers(group: str) -> int:
    """The smallest node count (at least 4) whose nodes E0..En-1 land on both of 2 workers."""
    n = 4
    while {shard_of(group, f"E{k}", 2) for k in range(n)} != {0, 1}:
        n += 1
    return n


def _workers_of(bridge: BridgeProcess) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for child in psutil.Process(bridge.process.pid).children():
        with contextlib.suppress(psutil.Error):
            tag = child.environ().get("UNS_WORKER", "")
            if tag:
                found[int(tag.split("/")[0])] = child
    return found


@pytest.mark.timeout(240)
async def test_two_workers_store_everything_and_survive_a_worker_kill(
    mqtt_broker: MqttBroker, database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path
) -> None:
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("workers need an external broker (the embedded amqtt one serves a single process)")
    host_id = f"workers-{uuid.uuid4().hex[:8]}"
    state_topic = f"spBv1.0/STATE/{host_id}"
    env = _env(mqtt_broker, database_dsn, group_id, uns_prefix, host_id, tmp_path)
    env.update(
        {"UNS_HOST_WORKERS": "2", "UNS_HOST_REBIRTH_INTERVAL_MS": "200", "UNS_DATABASE_FLUSH_MS": "50"}
    )
    nodes = _nodes_for_both_workers(group_id)
    owner = {k: shard_of(group_id, f"E{k}", 2) for k in range(nodes)}
    recorder = Recorder(mqtt_broker.host, mqtt_broker.port, [state_topic])
    load = Load(mqtt_broker.host, mqtt_broker.port, group_id, nodes, 0.005)
    bridge: BridgeProcess | None = None
    try:
        recorder.start()
        bridge = BridgeProcess(env, tmp_path)
        await until(
            lambda: any(d.get("online") is True for d in recorder.messages(state_topic)),
            60,
            "STATE online",
            lambda: bridge.output()[-2000:] if bridge else "",
        )
        workers = _workers_of(bridge)
        assert sorted(workers) == [0, 1]
        load.start()
        await until_stored(database_dsn, group_id, load.sent[: nodes * 10], 60)
        committed_at_kill = {v for v, _t, _m in await stored_rows(database_dsn, group_id)}
        # SIGKILL worker 1: the supervisor starts a new one, which asks its nodes for rebirths
        births = [len(e.birth_marks) for e in load.edges]
        workers[1].send_signal(signal.SIGKILL)

        def restarted() -> bool:
            # one look at the children: a worker just started may not show its environment yet
            now = _workers_of(bridge).get(1)
            return now is not None and now.pid != workers[1].pid

        await until(restarted, 30, "worker 1 restarted")
        await until(
            lambda: all(len(load.edges[k].birth_marks) > births[k] for k in range(nodes) if owner[k] == 1),
            60,
            "worker 1's nodes reborn",
        )
        await asyncio.sleep(1.0)
        load.stop_sending()
        promised = [i for e in load.edges for i in e.after_last_birth()]
        await until(lambda: set(promised) <= set(load.acked), 30, "the broker to acknowledge")
        await until_stored(database_dsn, group_id, promised, 60)
        untouched = [i for k, e in enumerate(load.edges) if owner[k] == 0 for i in e.sent]
        await until_stored(database_dsn, group_id, [i for i in untouched if i in set(load.acked)], 60)
        bridge.process.send_signal(signal.SIGTERM)
        assert await bridge.wait(90) == 0, bridge.output()[-3000:]
        assert not [w for w in workers.values() if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    finally:
        load.close()
        recorder.close()
        if bridge is not None:
            left: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                left = psutil.Process(bridge.process.pid).children(recursive=True)
            bridge.close()
            for child in left:  # a failed test must not leave workers behind (they would outlive it)
                with contextlib.suppress(psutil.Error):
                    child.kill()
    rows = await stored_rows(database_dsn, group_id)
    final = {v for v, _t, _m in rows}
    everything = tally(load.sent, rows)
    print(everything.line(f"2 workers, {nodes} nodes, worker 1 SIGKILLed and restarted"))
    print(tally(untouched, rows).line("  worker 0's nodes (lost = never acknowledged by the broker)"))
    print(tally(promised, rows).line("  published after the last rebirth"))
    assert committed_at_kill <= final
    assert everything.duplicated == 0
    assert tally(promised, rows).lost == 0
    # worker 0 alone is the Sparkplug host: one STATE birth, one death at the end, nothing in between
    states = [d["online"] for d in recorder.messages(state_topic)]
    assert states == [True, False], states
    log = bridge.output()
    assert "[worker 0]" in log and "[worker 1]" in log and "Traceback" not in log, log[-3000:]


# ----------------------------------------------------------- spools left by another worker count
def _segment(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{1:020d}.seg"
    path.write_bytes(b"")
    return path


def test_leftover_spools_are_found_for_the_right_process(tmp_path: Path) -> None:
    base = tmp_path / "spool"
    for name in ("worker-0", "worker-1", "worker-2", "worker-x"):
        _segment(base / name)
    (base / "worker-3").mkdir()  # no segments: nothing to drain
    _segment(base)
    # a single bridge: every worker directory below its own spool
    assert leftover_spools(base, None) == [base / "worker-0", base / "worker-1", base / "worker-2"]
    # worker 0 of 2: the single bridge's spool and workers 2+ (worker 1 is alive and owns its own)
    assert leftover_spools(base / "worker-0", (0, 2)) == [base, base / "worker-2"]
    assert leftover_spools(base / "worker-1", (1, 2)) == []
    assert leftover_spools(base / "worker-0", (0, 3)) == [base]


async def test_a_spool_left_by_a_worker_is_drained_by_a_single_bridge(
    database_dsn: str, group_id: str, tmp_path: Path
) -> None:
    """Worker 1 of 2 could not reach the database and spooled; the plant then went back to one
    bridge. That bridge drains worker-1's spool into the database."""
    base = tmp_path / "spool"
    info = MetricInfo(group_id, "N1", None, "T", DataType.Int32)

    async def database_away(batch: object, token: int | None = None) -> None:
        raise ConnectionRefusedError("database away")

    async with store(database_dsn) as writer:
        spooling = Forwarder(database_away, Spool.open(base / "worker-1"), writer.codec)
        writer.deliver = spooling.deliver
        await writer.handle(
            [defined(writer, info), Samples((Sample(info, STORE_T0, 1), Sample(info, STORE_T0 + 1, 2)))]
        )
        await writer.flush()
        assert spooling.pending >= 1
        await spooling.close()
    config = Config(spool=SpoolConfig(dir=base))
    async with store(database_dsn) as writer:
        leftovers = leftover_forwarders(config, writer, None)
        assert [f.spool.directory for f in leftovers] == [base / "worker-1"]
        for forwarder in leftovers:
            await forwarder.start()
        assert all([await f.wait_drained(30) for f in leftovers])
        for forwarder in leftovers:
            await forwarder.close()
    assert [(name, ms, value) for name, ms, value in await stored_values(database_dsn)] == [
        ("T", STORE_T0, 1),
        ("T", STORE_T0 + 1, 2),
    ]
