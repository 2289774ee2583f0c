"""The figure type that every benchmark suite returns, and how figures are printed."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure, optionally next to the ceiling it is compared with."""

    suite: str
    name: str
    value: float
    unit: str
    ceiling: float | None = None
    ceiling_name: str | None = None
    target_ratio: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ceiling in (None, 0):
            return None
        assert self.ceiling is not None
        return self.value / self.ceiling

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data

    def line(self) -> str:
        text = f"{self.suite:>10} | {self.name:<48} {self.value:>14,.1f} {self.unit}"
        if self.ceiling is not None:
            text += f"  vs {self.ceiling_name or 'ceiling'} {self.ceiling:,.1f} -> {self.ratio:.2f}x"
            if self.target_ratio is not None:
                verdict = "meets" if (self.ratio or 0) >= self.target_ratio else "BELOW"
                text += f" ({verdict} target {self.target_ratio:.2f}x)"
        if self.note:
            text += f"  [{self.note}]"
        return text
