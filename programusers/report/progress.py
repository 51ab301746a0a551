"""A long report's progress, the submitter's side: while its pipeline runs, the request's process says how
far it got, in counts only, about every 30 seconds (a log line; on a terminal, a status line redrawn in
place).

The counts are those the job's worker processes published in its staging folder
(programusers/report/tally.py), summed; with none published yet (workers in this process that have
not flushed), this process's own tally.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter
from contextlib import contextmanager

from apache_beam.io.filesystems import FileSystems

from programusers.report.tally import PUBLISHED, snapshot

_LOG = logging.getLogger(__name__)
# The counters a report's progress shows, in the order their steps happen, with a line's words for them.
STEPS = (("enrollments_read", "enrollment rows read"), ("consents_found", "consents found"),
         ("profiles_found", "profiles found"), ("report_rows_built", "report rows built"),
         ("report_rows_written", "rows written to sorted shards"))


def published(staging_dir: str) -> dict[str, int]:
    """The counts the job's worker processes published in `staging_dir`, summed."""
    total: Counter = Counter()
    for found in FileSystems.match([FileSystems.join(staging_dir, PUBLISHED)])[0].metadata_list:
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
