"""End to end: the real bridge (``python -m uns_bridge run``) fed Sparkplug DDATA at a rate ladder.

Per step the publisher process sends DDATA at the offered rate plus 20 probe messages/s (one metric on
a device of its own). Reported per step: metrics committed / time from the first publish to the last
commit, loss (sent vs ``count(*)`` of ``uns.samples`` for the group), p50/p99 publish -> committed row
(the probe's newest row, polled every 10 ms) and publish -> UNS message (the probe's republished JSON),
CPU % of one core of the bridge, Mosquitto (all its clients), the bench database's PostgreSQL backends
and the publisher. A step counts as sustained when nothing was lost and the bridge kept up (>= 90 % of the offered
rate committed, or the last row committed within max(1 s, a quarter of the step) of the last publish);
the ladder stops at the first step that is not (after one step down if the first rung already fails). Variants: 100-metric messages (the main
figure, vs the minimal pipeline ceiling, target 0.8x), 10- and 1-metric messages (message-rate bound, vs
the bare subscriber), and catalogs of 100k (and 1M in full mode) metrics (lookup-bound).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass, field

from tests.benchmarks import bench_ceilings
from tests.benchmarks._bridge import BridgeProcess, LatencyWatch, StoreProbe
from tests.benchmarks._figures import Figure
from tests.benchmarks._harness import (
    BenchUnavailable,
    CpuMeter,
    Publisher,
    bench_database,
    cpu_note,
    mosquitto_pids,
    peak_rss_mb,
    percentile,
    postgres_backends,
    services_or_reason,
    unique,
)
from tests.benchmarks._publisher import Fleet

SUITE = "e2e"
PROBE_HZ = 20.0
SUSTAINED_FRACTION = 0.9
BIRTH_CHUNK_MESSAGES = 200
STEP_DOWN = 0.8
MIN_RATE = 1_000.0
BIRTH_CHUNK_METRICS = 5_000


@dataclass(frozen=True)
class Variant:
    name: str
    nodes: int
    devices: int
    metrics: int
    #: offered metrics/s per step
    ladder: tuple[float, ...]
    duration: float
    #: seconds the births + catalogue may take before the variant is reported as too slow to set up
    births_budget: float = 600.0
    #: bridge worker processes (``host.workers``)
    workers: int = 1

    @property
    def catalog(self) -> int:
        return self.nodes * self.devices * self.metrics

    @property
    def per_message(self) -> bool:
        """Report in messages/s (message-rate bound variants)."""
        return self.metrics < 100


def variants(quick: bool) -> list[Variant]:
    if quick:
        return [
            Variant(
                "100-metric DDATA",
                10,
                1,
                100,
                (100_000, 150_000, 200_000, 250_000, 300_000, 350_000, 400_000),
                3.0,
            ),
            Variant(
                "100-metric DDATA, 2 workers",
                10,
                1,
                100,
                (150_000, 200_000, 250_000, 300_000, 350_000, 400_000),
                3.0,
                workers=2,
            ),
            Variant("10-metric DDATA", 10, 10, 10, (50_000, 150_000), 3.0),
            Variant("1-metric DDATA", 10, 100, 1, (10_000, 20_000, 25_000, 30_000), 3.0),
            Variant("catalog 100k, 100-metric DDATA", 100, 10, 100, (150_000,), 3.0, births_budget=45.0),
        ]
    return [
        Variant(
            "100-metric DDATA",
            10,
            1,
            100,
            (
                50_000,
                100_000,
                150_000,
                200_000,
                250_000,
                300_000,
                325_000,
                350_000,
                375_000,
                400_000,
                450_000,
            ),
            10.0,
        ),
        Variant(
            "100-metric DDATA, 2 workers",
            10,
            1,
            100,
            (100_000, 150_000, 200_000, 250_000, 300_000, 350_000, 375_000, 400_000, 450_000),
            10.0,
            workers=2,
        ),
        Variant("10-metric DDATA", 10, 10, 10, (50_000, 100_000, 150_000, 200_000, 300_000, 400_000), 10.0),
        Variant("1-metric DDATA", 10, 100, 1, (5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000), 10.0),
        Variant("catalog 100k, 100-metric DDATA", 100, 10, 100, (100_000, 150_000, 200_000, 300_000), 10.0),
        Variant("catalog 1M, 100-metric DDATA", 1000, 10, 100, (100_000, 150_000, 300_000), 10.0),
    ]


@dataclass
class Step:
    offered: float
    sent: int
    stored: int
    seconds: float
    db_ms: list[float]
    uns_ms: list[float]
    cpu: dict[str, float]
    #: seconds from the last publish to the last commit (a bridge that keeps up only drains its latency)
    drain: float = 0.0
    duration: float = 1.0
    #: publish -> committed of the step's first probe (s): the pipeline's delay, which the latency
    #: figures report; counted once, it would be charged to throughput too (most in short steps)
    lead: float = 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    @property
    def achieved(self) -> float:
        """Committed metrics/s over first publish -> last commit, less the first probe's delay.

        A bridge that keeps up commits its last row one delay after the last publish, so without
        ``lead`` a 3 s step at delay 0.3 s could show at most 91 % of the offered rate; one that
        falls behind commits its last row later by its backlog, which stays in. Never more than the
        rows over the publishing time."""
        span = max(self.seconds - self.lead, self.seconds - self.drain)
        return self.stored / span if span > 0 else 0.0

    @property
    def sustained(self) -> bool:
        """Nothing lost, and the bridge kept up: >= 90 % of the offered rate committed, or everything
        committed within max(1 s, a quarter of the step) of the last publish (short steps)."""
        kept_up = self.achieved >= SUSTAINED_FRACTION * self.offered or self.drain <= max(
            1.0, self.duration / 4
        )
        return self.lost == 0 and kept_up

    def latency_note(self) -> str:
        def ms(values: list[float], q: float) -> str:
            v = percentile(values, q)
            return "-" if v is None else f"{v:,.0f}"

        return (
            f"commit p50/p99 {ms(self.db_ms, 0.5)}/{ms(self.db_ms, 0.99)} ms, "
            f"UNS p50/p99 {ms(self.uns_ms, 0.5)}/{ms(self.uns_ms, 0.99)} ms"
        )


@dataclass
class Outcome:
    variant: Variant
    steps: list[Step] = field(default_factory=list)
    peak_rss_mb: float | None = None
    births_s: float = 0.0
    error: str | None = None


async def settle_births(
    pub: Publisher, store: StoreProbe, bridge: BridgeProcess, budget: float = 600.0
) -> tuple[int, float, LatencyWatch]:
    """Births in, catalog and birth rows stored; (sample count, seconds it took, started latency watch).

    Gives up (:class:`BenchUnavailable`, with the catalogue rate reached) after ``budget`` seconds."""
    fleet = pub.fleet
    started = time.perf_counter()
    # births are QoS 0 like all Sparkplug data: a burst the bridge cannot take at once would be dropped by
    # the broker, so send them in chunks of ~BIRTH_CHUNK_METRICS and let each be catalogued first
    per_node = max(1, fleet.devices * fleet.metrics)
    step = max(1, min(BIRTH_CHUNK_MESSAGES // (fleet.devices + 1), BIRTH_CHUNK_METRICS // per_node))
    born = 0
    birth_metrics = 0
    for first in range(0, fleet.nodes, step):
        last = min(fleet.nodes, first + step)
        chunk = await pub.births(first, last, probe=last == fleet.nodes)
        born += (last - first) * per_node + (1 if fleet.probe and last == fleet.nodes else 0)
        birth_metrics += chunk["birth_metrics"]
        left = max(5.0, budget - (time.perf_counter() - started))
        catalog, _ = await store.wait_for("metrics", born, timeout=left, stall=30)
        spent = time.perf_counter() - started
        if spent > budget and (catalog < born or last < fleet.nodes):
            raise BenchUnavailable(
                f"births too slow for this run's budget: {catalog:,} of {fleet.catalog:,} metrics catalogued in "
                f"{spent:.0f} s ({catalog / spent:,.0f} metrics/s)"
            )
        if catalog < born:
            raise BenchUnavailable(
                f"the bridge catalogued {catalog} of {born} born metrics; its log: {bridge.errors(limit=1) or 'no errors'}"
            )
    left = max(5.0, budget - (time.perf_counter() - started))
    stored, _ = await store.wait_for("samples", birth_metrics, timeout=left, stall=10)
    if stored < birth_metrics:
        spent = time.perf_counter() - started
        raise BenchUnavailable(
            f"birth values not stored in time: {stored:,} of {birth_metrics:,} rows after {spent:.0f} s "
            f"(catalogue complete)"
        )
    base = await store.settled()
    took = time.perf_counter() - started
    probe = await store.probe_metric()
    if probe is None:
        raise BenchUnavailable("the probe metric is not in uns.metrics")
    watch = LatencyWatch(bridge.dsn, store, probe[0], probe[1], fleet.host, fleet.port)
    await watch.start()
    return base, took, watch


async def measure_step(
    pub: Publisher,
    store: StoreProbe,
    watch: LatencyWatch,
    cpu: CpuMeter,
    base: int,
    offered: float,
    duration: float,
) -> tuple[Step, int]:
    """One step at ``offered`` metrics/s; (the step, the new sample count)."""
    watch.reset()
    cpu.start()
    sent = await pub.run(offered / pub.fleet.metrics, duration, probe_hz=PROBE_HZ)
    total = sent["metrics"] + sent["probe_msgs"]
    # the last probe was published after all data: wait for its row (cheap), then count (not cheap)
    last = sent["last_probe_ms"]
    if last is not None:
        await watch.wait_newest(last, timeout=duration * 4 + 30, stall=10)
    # CPU up to here: the count below is the bench's own query, not the bridge's work
    usage = cpu.stop()
    count, _ = await store.wait_for("samples", base + total, timeout=duration * 4 + 30, stall=10)
    done = time.time()
    if last is not None and watch.newest >= last:
        done = min(done, watch.newest_seen)
    step = Step(
        offered,
        total,
        count - base,
        done - sent["t0"],
        watch.db_ms,
        watch.uns_ms,
        usage,
        drain=done - sent["t1"],
        duration=duration,
        lead=watch.db_ms[0] / 1000 if watch.db_ms else 0.0,
    )
    return step, count


async def run_variant(variant: Variant, admin: str, host: str, port: int) -> Outcome:
    """The ladder of one variant against a fresh bridge on a fresh bench database."""
    outcome = Outcome(variant)
    group = unique("BenchE")
    fleet = Fleet(
        group=group,
        nodes=variant.nodes,
        devices=variant.devices,
        metrics=variant.metrics,
        host=host,
        port=port,
    )
    async with (
        bench_database(admin) as (dsn, database),
        BridgeProcess(dsn, [group], host, port, workers=variant.workers) as bridge,
    ):
        store = await StoreProbe.connect(dsn, group)
        watch: LatencyWatch | None = None
        try:
            async with Publisher(fleet) as pub:
                base, outcome.births_s, watch = await settle_births(pub, store, bridge, variant.births_budget)
                cpu = CpuMeter(
                    {
                        "bridge": bridge.pids(),
                        "mosquitto": mosquitto_pids(),
                        "postgres": await postgres_backends(dsn, database),
                        "publisher": [pub.pid],
                    }
                )
                ladder = list(variant.ladder)
                while ladder:
                    offered = ladder.pop(0)
                    if not bridge.alive():
                        raise BenchUnavailable(f"the bridge died:\n{bridge.log_tail()}")
                    step, base = await measure_step(pub, store, watch, cpu, base, offered, variant.duration)
                    outcome.steps.append(step)
                    if not step.sustained:
                        # the first rung already too fast: one more try at 80 % of what it did commit
                        retry = STEP_DOWN * step.achieved
                        if len(outcome.steps) == 1 and retry >= MIN_RATE and step.lost == 0:
                            ladder = [retry]
                        else:
                            break
                peaks = [peak_rss_mb(pid) for pid in bridge.pids()]
                outcome.peak_rss_mb = sum(p for p in peaks if p is not None) if any(peaks) else None
        finally:
            if watch is not None:
                await watch.stop()
            await store.close()
    return outcome


def figures_of(outcome: Outcome, ceilings: bench_ceilings.Ceilings) -> list[Figure]:
    v = outcome.variant
    unit = "msg/s" if v.per_message else "metrics/s"
    scale = 1.0 / v.metrics if v.per_message else 1.0
    if outcome.error is not None:
        return [Figure(SUITE, f"{v.name}: bridge could not be measured", math.nan, unit, note=outcome.error)]
    out: list[Figure] = []
    for step in outcome.steps:
        out.append(
            Figure(
                SUITE,
                f"{v.name} @ {step.offered * scale:,.0f} {unit} offered",
                step.achieved * scale,
                unit,
                note=f"lost {step.lost}; {step.latency_note()}; {cpu_note(step.cpu)}"
                + ("" if step.sustained else "; NOT sustained"),
            )
        )
    good = [s for s in outcome.steps if s.sustained]
    best = max((s.achieved for s in good), default=0.0)
    if v.per_message:
        ceiling, cname, target = ceilings.broker_msgs_1, "bare subscriber (1-metric)", None
    else:
        ceiling, cname, target = ceilings.pipeline_metrics, "minimal pipeline", 0.8
    out.append(
        Figure(
            SUITE,
            f"{v.name}: sustained, zero loss",
            best * scale,
            unit,
            ceiling=None if math.isnan(ceiling) else ceiling,
            ceiling_name=cname,
            target_ratio=target if v.catalog == 1000 else None,
            note=f"catalog {v.catalog:,} metrics; births+catalog {outcome.births_s:.1f} s"
            + ("" if good else "; no step sustained")
            + (
                "; every rung sustained: the limit is above the ladder"
                if good and len(good) == len(v.ladder)
                else ""
            ),
        )
    )
    if not v.per_message and v.catalog == 1000 and not math.isnan(ceilings.copy_rows):
        out.append(
            Figure(
                SUITE,
                f"{v.name}: sustained vs raw COPY",
                best,
                "metrics/s",
                ceiling=ceilings.copy_rows,
                ceiling_name="raw COPY",
            )
        )
    near = min(outcome.steps, key=lambda s: abs(s.offered - 150_000), default=None)
    if near is not None and not v.per_message:
        for label, values in (
            ("publish -> committed row", near.db_ms),
            ("publish -> UNS message", near.uns_ms),
        ):
            for q in (0.5, 0.99):
                value = percentile(values, q)
                out.append(
                    Figure(
                        SUITE,
                        f"{v.name}: {label} p{int(q * 100)} @ {near.offered:,.0f}/s",
                        math.nan if value is None else value,
                        "ms",
                        note=f"{len(values)} probe samples",
                    )
                )
    if outcome.peak_rss_mb is not None:
        out.append(
            Figure(
                SUITE,
                f"{v.name}: bridge peak RSS",
                outcome.peak_rss_mb,
                "MB",
                note=f"catalog {v.catalog:,} metrics",
            )
        )
    return out


def brief(reason: str, limit: int = 400) -> str:
    """A failure reason on one line: its first line and the last lines of a log tail, at most ``limit``."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    text = " | ".join(dict.fromkeys(lines[:1] + lines[-2:]))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ceilings(quick: bool) -> bench_ceilings.Ceilings:
    try:
        return bench_ceilings.measure(quick)
    except Exception as exc:  # the bridge figures still print, without ratios
        print(f"!! e2e: ceilings could not be measured: {exc!r}", file=sys.stderr)
        return bench_ceilings.Ceilings()


async def _run(quick: bool) -> list[Outcome]:
    admin, broker = services_or_reason()
    outcomes: list[Outcome] = []
    for variant in variants(quick):
        try:
            outcomes.append(await run_variant(variant, admin, broker.host, broker.port))
        except BenchUnavailable as exc:
            reason = str(exc)
            print(f"!! e2e {variant.name}: {reason}", file=sys.stderr)
            outcomes.append(Outcome(variant, error=brief(reason)))
            if "before it was ready" in reason or "no STATE online" in reason:
                break  # the bridge does not start: the other variants would say the same
    return outcomes


def run(quick: bool) -> list[Figure]:
    ceilings = _ceilings(quick)
    figures: list[Figure] = []
    try:
        outcomes = asyncio.run(_run(quick))
    except BenchUnavailable as exc:
        return [Figure(SUITE, "end to end could not be measured", math.nan, "", note=brief(str(exc)))]
    for outcome in outcomes:
        figures.extend(figures_of(outcome, ceilings))
    return figures
