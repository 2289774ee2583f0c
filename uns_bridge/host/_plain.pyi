from typing import Any

from uns_bridge.host.effects import MetricInfo, Sample
from uns_bridge.sparkplug.values import Metric

def plain_samples(
    metrics: tuple[Metric, ...],
    start: int,
    aliases: dict[int, MetricInfo],
    device: str | None,
    fallback: int,
    historical: bool,
    out: list[Sample],
    rules: tuple[Any, ...],
    /,
) -> int: ...
