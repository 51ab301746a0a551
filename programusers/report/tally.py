"""A long pipeline's progress, the workers' side: its DoFns count what they did into this process's tally
(`counter`), and a worker publishes its process's counts for a job into the job's staging folder
(`Publisher`), where the submitting process reads them (programusers/report/progress.py shows them).

Beam's metrics reach the submitter only when a bundle (for the in-process runner: the whole stage) ends,
so they cannot show progress. The tally is per process; counts only, never values.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import Counter

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from programusers.io import files

__all__ = ["PUBLISHED", "Publisher", "count", "counter", "snapshot"]

_LOG = logging.getLogger(__name__)
_TALLY: Counter = Counter()
_LOCK = threading.Lock()
PUBLISHED = "progress-*.json"  # the files the workers publish in a job's staging folder


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
            if joined is None or (joined[1] in _FLUSHED and not files.exists(joined[1])):
                path = FileSystems.join(self._staging_dir, PUBLISHED.replace("*", uuid.uuid4().hex))
                joined = _JOINED[self._staging_dir] = (dict(_TALLY), path)
            self._since, self._path = joined

    def tick(self) -> None:
        if self._last is None or time.monotonic() - self._last >= self._every:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if files.is_local(self._staging_dir) and not os.path.isdir(self._staging_dir):
            return  # the job's staging is gone (a straggler of a failed run): do not make it again
        with _LOCK:
            counts = {step: n - since for step, n in _TALLY.items() if n > (since := self._since.get(step, 0))}
            # A local file is replaced whole by a rename; an object store's object is whole when written.
            staged = self._path + ".tmp" if files.is_local(self._path) else self._path
            try:
                with FileSystems.create(staged) as out:
                    out.write(json.dumps(counts).encode())
                if staged != self._path:
                    FileSystems.rename([staged], [self._path])
                _FLUSHED.add(self._path)
            except Exception as error:  # progress is worth no failed bundle (object stores raise their own)
                _LOG.debug("progress not published: %s", type(error).__name__)
