"""The spool as a state machine against a plain list: append, read, ack, rewind, reopen, in any order."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from uns_bridge.store.spool import HEADER_SIZE, Spool, SpoolFull


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.policy = "block"
        self.options = {"segment_bytes": 300, "max_bytes": 1200}
        self.spool = Spool.open(self.dir, when_full=self.policy, **self.options)  # type: ignore[arg-type]
        self.pending: list[tuple[int, bytes]] = []  # model: unacknowledged records, oldest first
        self.read_upto = 0  # index into pending of the next record read() returns
        self.appended = 0
        self.acked = 0

    @rule(
        policy=st.sampled_from(["block", "drop-oldest"]),
        fsync=st.sampled_from(["never", "batch", "always"]),
    )
    def reopen(self, policy: str, fsync: str) -> None:
        self.spool.close()
        self.policy = policy
        self.spool = Spool.open(self.dir, when_full=policy, fsync=fsync, **self.options)  # type: ignore[arg-type]
        assert self.spool.report.clean, self.spool.report.summary()
        self.read_upto = 0

    @rule(payload=st.binary(max_size=200))
    def append(self, payload: bytes) -> None:
        before = self.spool.dropped
        try:
            seq = self.spool.append(payload)
        except SpoolFull:
            assert self.policy == "block"
            assert self.spool.size_bytes + HEADER_SIZE + len(payload) > self.options["max_bytes"]
            return
        self.appended += 1
        assert seq == (self.pending[-1][0] + 1 if self.pending else seq)
        lost = self.spool.dropped - before
        if lost:
            assert self.policy == "drop-oldest"
            self.pending = self.pending[lost:]
            self.read_upto = 0  # the reader restarts after a drop; records it handed out stay handed out
        self.pending.append((seq, payload))

    @rule(n=st.integers(min_value=1, max_value=5))
    def read(self, n: int) -> None:
        records = self.spool.read(max_records=n)
        got = [(r.seq, r.payload) for r in records]
        if self.read_upto == 0 and got and self.pending and got[0] != self.pending[0]:
            # after a drop the cursor skips what it had already handed out
            start = next(i for i, p in enumerate(self.pending) if p == got[0])
            self.read_upto = start
        assert got == self.pending[self.read_upto : self.read_upto + n]
        self.read_upto += len(got)

    @precondition(lambda self: self.read_upto > 0)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(min_value=1, max_value=self.read_upto))
        seq = self.pending[k - 1][0]
        self.spool.ack(seq)
        self.pending = self.pending[k:]
        self.read_upto -= k

    @rule()
    def rewind(self) -> None:
        self.spool.rewind()
        self.read_upto = 0

    @invariant()
    def counts_agree(self) -> None:
        assert self.spool.pending_count() == len(self.pending)
        assert self.spool.is_empty() == (not self.pending)
        assert self.spool.size_bytes <= self.options["max_bytes"]

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(max_examples=250, stateful_step_count=50, deadline=None)
test_spool_model = SpoolMachine.TestCase
