"""Progress of a long report, in counts only: the exhaust's DoFns count what they did into this process's
tally, and the request's submitting process shows it about every 30 seconds (a log line; on a terminal,
a status line redrawn in place).

Beam's metrics reach the submitter only when a bundle (for the in-process runner: the whole stage)
ends, so they cannot show progress. The tally is per process: with workers in the submitting process
(the in-process runner, Prism's LOOPBACK environment) it is the whole job's; workers elsewhere show none.
"""
from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from contextlib import contextmanager

from apache_beam.metrics import Metrics

_LOG = logging.getLogger(__name__)
_TALLY: Counter = Counter()
_LOCK = threading.Lock()
# The counters a report's progress shows, in the order their steps happen, with a line's words for them.
STEPS = (("enrollments_read", "enrollment rows read"), ("consents_found", "consents found"),
         ("profiles_found", "profiles found"), ("records", "report rows built"),
         ("rows_written", "rows written to sorted shards"))


def count(step: str, n: int = 1) -> None:
    with _LOCK:
        _TALLY[step] += n


class _Counter:
    """A Beam counter that also counts into this process's tally."""

    def __init__(self, namespace, name: str):
        self._metric, self._name = Metrics.counter(namespace, name), name

    def inc(self, n: int = 1) -> None:
        self._metric.inc(n)
        count(self._name, n)


def counter(namespace, name: str) -> _Counter:
    """Metrics.counter(namespace, name), whose counts also show as progress."""
    return _Counter(namespace, name)


def snapshot() -> dict[str, int]:
    with _LOCK:
        return dict(_TALLY)


def describe(counts: dict[str, int], since: dict[str, int]) -> str:
    """The steps' counts since `since`, e.g. "12,000 enrollment rows read, 6,000 users' consent looked up"."""
    return ", ".join(f"{counts.get(step, 0) - since.get(step, 0):,} {words}" for step, words in STEPS
                     if counts.get(step, 0) - since.get(step, 0))


@contextmanager
def shown(what: str, every: float = 30.0, stream=None):
    """While the block runs, says how far `what` got: a log line every `every` seconds, and on a terminal
    a status line redrawn each second (cleared at the end)."""
    stream = stream or sys.stderr
    interactive = stream.isatty()
    start, done = snapshot(), threading.Event()

    def report():
        ticks, per_log = 0, max(1, round(every)) if interactive else 1
        while not done.wait(1.0 if interactive else every):
            ticks += 1
            text = describe(snapshot(), start)
            if ticks % per_log == 0 and text:
                if interactive:
                    print("\r\033[K", end="", file=stream, flush=True)
                _LOG.info("%s: %s", what, text)
            if interactive:
                print(f"\r  {what}: {text or 'starting'}\033[K", end="", file=stream, flush=True)

    thread = threading.Thread(target=report, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if interactive:
            print("\r\033[K", end="", file=stream, flush=True)
