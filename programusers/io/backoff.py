"""Capped exponential backoff whose second half is random, the rule of every retry in io/ (redis-py's
EqualJitterBackoff is the same rule): the clients and workers one outage failed together do not all come
back at the same instant, and none waits less than half its step. `retry` runs a call again with those
waits; `count_wait` adds a wait to a throttled-time counter."""
from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Backoff", "causes", "count_wait", "retry"]

T = TypeVar("T")


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


def retry(call: Callable[[], T], backoff: Backoff, retry_if: Callable[[Exception], bool], *,
          limit: float | None = None, on_wait: Callable[[Exception, float], None] | None = None,
          clock=time) -> T:
    """`call()`'s result; while it raises an error worth another try, called again after `backoff`'s wait.

    After failed attempt n (1, 2, ...): an error `retry_if` says no to is raised at once; a wait of
    `backoff.seconds(n)` that would end past `limit` is not begun, and the error is raised instead (the last
    one, with its traceback); else `on_wait(error, seconds)` is told, and the wait is slept.

    Args:
      call: what to run, without arguments (bind them with functools.partial or a lambda).
      backoff: the waits between attempts.
      retry_if: whether an error (any Exception) `call()` raised is worth another try, e.g.
        `lambda e: isinstance(e, Unavailable) and not refused(e)`.
      limit: seconds, from the first attempt, within which every wait must end; None: for ever.
      on_wait: told of each wait before it begins, with the error and the wait's seconds: to log it, count it
        (count_wait) or enforce a limit of its own; an error it raises ends the retrying.
      clock: where time is read and slept: anything with monotonic() and sleep(seconds); by default the time
        module, whose functions are looked up at each use.
    """
    deadline = None if limit is None else clock.monotonic() + limit
    for attempt in itertools.count(1):
        try:
            return call()
        except Exception as error:
            if not retry_if(error):
                raise
            seconds = backoff.seconds(attempt)
            if deadline is not None and clock.monotonic() + seconds > deadline:
                raise
            if on_wait is not None:
                on_wait(error, seconds)
            clock.sleep(seconds)


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then the errors it was raised from or while handling, in turn: what a retry decision or an
    operator's message looks through for the store error underneath."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__
