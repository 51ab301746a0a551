"""Progress of a long report, in counts only: the exhaust's DoFns count what they did into this process's
tally, and the request's submitting process shows it about every 30 seconds (a log line; on a terminal,
a status line redrawn in place).

Beam's metrics reach the submitter only when a bundle (for the in-process runner: the whole stage)
ends, so they cannot show progress. The tally is per process. Workers in other processes (an SDK
worker pool, a cluster's workers) publish theirs into the job's staging, which they share with the
submitter (`Publisher`), and the submitter sums what they published; counts only, like the log lines.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager

from apache_beam.io.filesystems import FileSystems
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


_PUBLISHED = "progress-*.json"
# Per staging folder: this process's tally when it joined that job, and the file it publishes into.
_JOINED: dict[str, tuple[dict[str, int], str]] = {}
_FLUSHED: set[str] = set()  # the files written at least once


class Publisher:
    """A worker's part: this process's counts for the job staged in `staging_dir`, written to a file of its
    own there (replaced whole) at most every `every` seconds as its DoFn calls tick(), and at flush().
    Driven by the DoFn's own calls, so nothing is left running once the job's bundles stop."""

    def __init__(self, staging_dir: str, every: float = 10.0):
        self._staging_dir, self._every = staging_dir, every
        self._last: float | None = None  # never published: the first tick does, whatever the clock reads

    def setup(self) -> None:
        with _LOCK:
            joined = _JOINED.get(self._staging_dir)
            # One baseline and file per process and job, whatever the DoFn instances; a job run again in
            # the same staging (after a store outage: its files were removed) starts from its own counts.
            if joined is None or (joined[1] in _FLUSHED and not FileSystems.exists(joined[1])):
                path = FileSystems.join(self._staging_dir, f"progress-{uuid.uuid4().hex}.json")
                joined = _JOINED[self._staging_dir] = (dict(_TALLY), path)
            self._since, self._path = joined

    def tick(self) -> None:
        if self._last is None or time.monotonic() - self._last >= self._every:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if "://" not in self._staging_dir and not os.path.isdir(self._staging_dir):
            return  # the job's staging is gone (a straggler of a failed run): do not make it again
        with _LOCK:
            counts = {step: n - since for step, n in _TALLY.items() if n > (since := self._since.get(step, 0))}
            staged = self._path + ".tmp"
            try:
                with FileSystems.create(staged) as out:
                    out.write(json.dumps(counts).encode())
                FileSystems.rename([staged], [self._path])
                _FLUSHED.add(self._path)
            except OSError as error:  # progress is worth no failed bundle
                _LOG.debug("progress not published: %s", type(error).__name__)


def published(staging_dir: str) -> dict[str, int]:
    """The counts the job's worker processes published in `staging_dir`, summed."""
    total: Counter = Counter()
    for found in FileSystems.match([FileSystems.join(staging_dir, _PUBLISHED)])[0].metadata_list:
        try:
            with FileSystems.open(found.path) as published_file:
                total.update(json.load(published_file))
        except (OSError, ValueError):  # replaced or removed meanwhile: counted at the next look
            continue
    return dict(total)


def describe(counts: dict[str, int], since: dict[str, int]) -> str:
    """The steps' counts since `since`, e.g. "12,000 enrollment rows read, 6,000 users' consent looked up"."""
    return ", ".join(f"{counts.get(step, 0) - since.get(step, 0):,} {words}" for step, words in STEPS
                     if counts.get(step, 0) - since.get(step, 0))


@contextmanager
def shown(what: str, every: float = 30.0, stream=None, staging_dir: str | None = None):
    """While the block runs, says how far `what` got: a log line every `every` seconds, and on a terminal
    a status line redrawn each second (cleared at the end). The counts are those the workers published
    in `staging_dir` (the job's staging folder), else this process's."""
    stream = stream or sys.stderr
    interactive = stream.isatty()
    start, done = snapshot(), threading.Event()

    def counts() -> tuple[dict[str, int], dict[str, int]]:
        found = published(staging_dir) if staging_dir else {}
        return (found, {}) if found else (snapshot(), start)

    def report():
        ticks, per_log = 0, max(1, round(every)) if interactive else 1
        while not done.wait(min(1.0, every) if interactive else every):
            ticks += 1
            text = describe(*counts())
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
