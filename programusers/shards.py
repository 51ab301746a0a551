"""Range sharding for the sorted report: shard i holds only sort keys below those of shard i+1, so the
shards, each sorted on its own, concatenate in index order into one sorted file."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

# Quantiles sampled from the sort keys; the most shards a report can be cut into.
MAX_SHARDS = 100


def range_bounds(quantiles: Sequence, count: int, rows_per_shard: int) -> list:
    """Shard boundaries for ``count`` keys, aiming at ``rows_per_shard`` keys a shard.

    ``quantiles`` are evenly spaced sample keys from smallest to largest (Beam's ApproximateQuantiles);
    ``n`` shards take every ``len(quantiles) // n``-th inner one as a bound."""
    steps = len(quantiles) - 1
    shards = min(max(math.ceil(count / rows_per_shard), 1), max(steps, 1))
    return sorted({quantiles[i * steps // shards] for i in range(1, shards)})


def shard_of(key, bounds: Sequence) -> int:
    """The shard of a key: the number of bounds at or below it (equal keys share a shard)."""
    return bisect_right(bounds, key)
