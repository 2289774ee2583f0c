"""Plant-like signals for simulated devices; each is deterministic given its ``random.Random``.

A signal is stepped with the simulated time in ms and returns its new value, or :data:`UNCHANGED` when
nothing changed (report by exception, as real edge nodes do).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

from uns_bridge.sparkplug.values import DataSet, Value


class Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()


class Signal:
    """Base: ``value`` is the current value; :meth:`step` advances to a time."""

    value: Value = None

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        raise NotImplementedError


@dataclass
class Static(Signal):
    """A value that only a command (or nothing) changes: firmware version, hierarchy names, flags."""

    value: Value = None

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        return UNCHANGED


@dataclass
class Analog(Signal):
    """A slow sine around ``mean`` plus Gaussian noise, rounded to ``decimals``."""

    mean: float
    amplitude: float
    noise: float
    period_s: float
    decimals: int = 3
    phase: float = 0.0
    value: Value = None

    def __post_init__(self) -> None:
        if self.value is None:
            self.value = round(self.mean + self.amplitude * math.sin(self.phase), self.decimals)

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        angle = 2 * math.pi * (now_ms / 1000.0) / self.period_s + self.phase
        new = round(self.mean + self.amplitude * math.sin(angle) + rng.gauss(0.0, self.noise), self.decimals)
        if new == self.value:
            return UNCHANGED
        self.value = new
        return new


@dataclass
class Counter(Signal):
    """A production counter: grows by 0..``max_step`` per step while the machine runs; wraps at ``wrap``."""

    max_step: int = 3
    wrap: int | None = None
    value: Value = 0

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        increment = rng.randint(0, self.max_step)
        if increment == 0:
            return UNCHANGED
        assert isinstance(self.value, int)
        new = self.value + increment
        if self.wrap is not None:
            new %= self.wrap
        self.value = new
        return new


@dataclass
class StateMachine(Signal):
    """A machine state that moves along ``transitions`` with a probability per step."""

    transitions: dict[str, tuple[tuple[str, float], ...]] = field(
        default_factory=lambda: {
            "Idle": (("Running", 0.2),),
            "Running": (("Blocked", 0.03), ("Idle", 0.02), ("Fault", 0.005)),
            "Blocked": (("Running", 0.3),),
            "Fault": (("Idle", 0.1),),
        }
    )
    value: Value = "Idle"

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        roll = rng.random()
        for target, probability in self.transitions[str(self.value)]:
            if roll < probability:
                self.value = target
                return target
            roll -= probability
        return UNCHANGED


STATE_CODES = {"Idle": 0, "Running": 1, "Blocked": 2, "Fault": -1}


@dataclass
class StateCode(Signal):
    """The numeric code of a :class:`StateMachine` (Int32, with a negative code for Fault)."""

    machine: StateMachine
    value: Value = 0

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        new = STATE_CODES.get(str(self.machine.value), 99)
        if new == self.value:
            return UNCHANGED
        self.value = new
        return new


@dataclass
class Alarm(Signal):
    """A Boolean alarm: raised rarely, cleared after a while."""

    raise_probability: float = 0.01
    clear_probability: float = 0.2
    value: Value = False

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        if rng.random() < (self.clear_probability if self.value else self.raise_probability):
            self.value = not self.value
            return self.value
        return UNCHANGED


@dataclass
class Text(Signal):
    """A string that changes now and then (batch id, operator, recipe name)."""

    prefix: str = "B"
    change_probability: float = 0.02
    counter: int = 1000
    value: Value = "B1000"

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        if rng.random() < self.change_probability:
            self.counter += 1
            self.value = f"{self.prefix}{self.counter}"
            return self.value
        return UNCHANGED


@dataclass
class SignedOffset(Signal):
    """A small signed integer (Int8), negative half of the time: exercises signed encodings."""

    value: Value = -5

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        if rng.random() < 0.3:
            self.value = rng.randint(-128, 127)
            return self.value
        return UNCHANGED


@dataclass
class Spectrum(Signal):
    """A FloatArray of a few bins (vibration spectrum), refreshed now and then."""

    bins: int = 8
    value: Value = (0.0,) * 8

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        if rng.random() < 0.2:
            # float32-exact values, so they survive the wire unchanged
            self.value = tuple(float(round(rng.uniform(0, 4) * 64) / 64) for _ in range(self.bins))
            return self.value
        return UNCHANGED


@dataclass
class Recipe(Signal):
    """A DataSet (Step String, Setpoint Double, Duration Int32) replaced when a new recipe is loaded."""

    value: Value = None
    loads: int = 0

    def __post_init__(self) -> None:
        self.value = self._table(random.Random(0))

    def _table(self, rng: random.Random) -> DataSet:
        from uns_bridge.sparkplug.datatypes import DataType

        steps = ("Heat", "Hold", "Cool")
        rows = tuple((step, round(rng.uniform(20, 200), 1), rng.randint(10, 600)) for step in steps)
        return DataSet(
            columns=("Step", "Setpoint", "Duration"),
            types=(DataType.String, DataType.Double, DataType.Int32),
            rows=rows,
        )

    def step(self, now_ms: int, rng: random.Random) -> Value | Unchanged:
        if rng.random() < 0.01:
            self.loads += 1
            self.value = self._table(rng)
            return self.value
        return UNCHANGED
