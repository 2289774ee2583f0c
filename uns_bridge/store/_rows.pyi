from typing import Any

from uns_bridge.host.effects import MetricInfo, Quality, Sample

def sample_rows(
    samples: tuple[Sample, ...],
    start: int,
    metric_ids: dict[MetricInfo, int],
    current: dict[int, tuple[Any, ...]],
    out: list[tuple[Any, ...]],
    good: Quality,
    /,
) -> int: ...
def current_rows(current: dict[int, tuple[Any, ...]], /) -> list[tuple[Any, ...]]: ...
