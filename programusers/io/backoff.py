"""Capped exponential backoff whose second half is random, the rule of every retry in io/ (redis-py's
EqualJitterBackoff is the same rule): the clients and workers one outage failed together do not all come
back at the same instant, and none waits less than half its step."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "count_wait"]


@dataclass(frozen=True)
class Backoff:
    """Waits of `base`, 2 `base`, 4 `base`, ... seconds, at most `cap`, each with its second half random.

    Args:
      base: the first step, in seconds.
      cap: the longest step, in seconds.
    """
    base: float
    cap: float

    def seconds(self, attempt: int, jitter: Callable[[], float] = random.random) -> float:
        """The wait after failed attempt number `attempt` (1, 2, ...); `jitter()` is in [0, 1)."""
        step = min(self.base * 2 ** min(attempt - 1, 60), self.cap)
        return step / 2 + step / 2 * jitter()


def count_wait(counter, seconds: float) -> None:
    """Adds a wait to a throttled-time counter (anything with inc(n)) in whole milliseconds; nothing for
    none, so that a counter never waited on stays out of the job's counters."""
    if (ms := round(seconds * 1000)) > 0:
        counter.inc(ms)
