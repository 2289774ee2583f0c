from uns_bridge.host.effects import MetricInfo, Sample

def coalesce(
    samples: tuple[Sample, ...],
    start: int,
    last: dict[MetricInfo, Sample],
    topics: dict[MetricInfo, str],
    pending: dict[str, object],
    seq: int | None,
    limit: int,
    /,
) -> tuple[int, int, int]: ...
