"""SIGKILL a process that spools and drains against a private PostgreSQL, restart it: nothing lost or doubled.

The child prints ``S <id>`` once ``Forwarder.deliver`` returned for the batch ending with ``id`` (the batch
is then committed or on disk). Those batches must all be stored exactly once in the end; batches in flight
at the kill may or may not be stored, but never twice (the sink records the spool token in the same
transaction, the idempotence the forwarder's ``token`` exists for).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.private_servers import PrivatePostgres, postgres_bin_dir

pytestmark = pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL binaries")
REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tests.fault_counts import JsonIds, TableSink
    from uns_bridge.store.forward import Forwarder
    from uns_bridge.store.spool import Spool

    async def main(dsn, spool_dir, base, batches):
        sink = TableSink(dsn, idempotent=True)
        merge = (lambda batches: [i for b in batches for i in b]) if sys.argv[5] == "merge" else None
        forwarder = Forwarder(sink.deliver, Spool.open(Path(spool_dir), fsync="batch"), JsonIds(),
                              retry_min_s=0.02, retry_max_s=0.2, merge=merge, drain_records=8)
        await forwarder.start()
        for b in range(batches):
            batch = list(range(base + b * 10, base + b * 10 + 10))
            await forwarder.deliver(batch)
            print("S", batch[-1], flush=True)
            await asyncio.sleep(0.002)
        await forwarder.wait_drained(120)
        await forwarder.close()
        print("DONE", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        yield pg


def start_child(dsn: str, spool_dir: Path, base: int, batches: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn, str(spool_dir), str(base), str(batches), mode],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def read_acknowledged(child: subprocess.Popen[str], lines: int, acknowledged: list[int]) -> bool:
    """Read up to ``lines`` lines; False when the child finished (``DONE``)."""
    assert child.stdout is not None
    for _ in range(lines):
        line = child.stdout.readline()
        if not line:
            raise AssertionError(f"child exited early with {child.wait()}")
        if line.startswith("DONE"):
            return False
        last = int(line.split()[1])
        acknowledged.extend(range(last - 9, last + 1))
    return True


def kill(child: subprocess.Popen[str], acknowledged: list[int]) -> None:
    """SIGKILL the child, then count what it acknowledged before dying (still in the pipe)."""
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stdout is not None
    for line in child.stdout.read().splitlines():
        if line.startswith("S "):
            last = int(line.split()[1])
            acknowledged.extend(range(last - 9, last + 1))
    child.stdout.close()


async def stored_ids(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS fault_sample (id bigint NOT NULL, pos bigserial);"
            "CREATE TABLE IF NOT EXISTS fault_applied (token bigint PRIMARY KEY)"
        )
        return [r["id"] for r in await conn.fetch("SELECT id FROM fault_sample")]
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["single", "merge"])
def test_sigkill_during_spool_and_drain_loses_and_duplicates_nothing(
    private_pg: PrivatePostgres, tmp_path: Path, mode: str
) -> None:
    rng = random.Random(mode)
    spool_dir = tmp_path / "spool"
    asyncio.run(stored_ids(private_pg.dsn))  # creates the tables
    acknowledged: list[int] = []
    kills = 0
    for run in range(4):
        database_down = run % 2 == 0
        if database_down:
            private_pg.stop()
        child = start_child(private_pg.dsn, spool_dir, base=run * 1_000_000, batches=100_000, mode=mode)
        try:
            read_acknowledged(child, rng.randint(50, 150), acknowledged)
            if database_down:
                private_pg.start()  # the drain starts while batches keep coming
            read_acknowledged(child, rng.randint(5, 200), acknowledged)
        finally:
            kill(child, acknowledged)
            kills += 1
        if not private_pg.running:
            private_pg.start()
    final = start_child(private_pg.dsn, spool_dir, base=9_000_000, batches=20, mode=mode)
    try:
        while read_acknowledged(final, 1, acknowledged):
            pass
    finally:
        kill(final, acknowledged)
    ids = asyncio.run(stored_ids(private_pg.dsn))
    distinct = set(ids)
    lost = set(acknowledged) - distinct
    duplicated = len(ids) - len(distinct)
    in_flight_stored = len(distinct - set(acknowledged))
    print(
        f"bridge-like process SIGKILLed {kills} times while spooling/draining ({mode}): sent={len(acknowledged)} "
        f"stored={len(distinct & set(acknowledged))} duplicated={duplicated} lost={len(lost)} "
        f"(plus {in_flight_stored} of batches in flight at a kill)"
    )
    assert not lost, sorted(lost)[:10]
    assert duplicated == 0
