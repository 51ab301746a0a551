"""Our pipelines' Beam counters, read back from a finished run."""


def counters(result) -> dict[str, int]:
    """Counters of our DoFns (namespaces under `programusers`) by name, summed over steps; the runners'
    own metrics are left out. Counter names are row counts and issue names, never values."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        metric = counter.key.metric
        if metric.namespace.startswith("programusers"):
            # Prism reports committed values, the in-process runner attempted ones.
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[metric.name] = totals.get(metric.name, 0) + (value or 0)
    return totals
