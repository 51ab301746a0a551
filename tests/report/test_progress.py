"""A long report's progress as the submitter shows it: counts only, in the steps' order, from what the
job's workers published."""
import logging
import time

from programusers.report import progress
from programusers.report.tally import Publisher, count, counter


def lines_shown(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "programusers.report.progress"]


def until_shown(caplog, line: str) -> None:
    """Waits (5 s at most) for the progress thread to show `line`: a fixed pause may pass before it runs."""
    deadline = time.monotonic() + 5
    while line not in lines_shown(caplog) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_progress_shows_counts_only_in_the_steps_order(caplog):
    counter("ns", "report_rows_built").inc(3)  # before the block: not this request's
    with caplog.at_level(logging.INFO, logger="programusers.report.progress"), progress.shown("request R", every=0.05):
        counter("ns", "enrollments_read").inc(1200)
        counter("ns", "report_rows_built").inc(7)
        count("consent_rows_scanned", 5)  # not a step shown
        until_shown(caplog, "request R: 1,200 enrollment rows read, 7 report rows built")
    lines = lines_shown(caplog)
    assert lines and lines[-1] == "request R: 1,200 enrollment rows read, 7 report rows built"


def test_progress_of_workers_elsewhere_is_what_they_published(tmp_path, caplog):
    staging = str(tmp_path)
    worker = Publisher(staging, every=3600)
    worker.setup()
    counter("ns", "enrollments_read").inc(40)
    worker.tick()  # the first tick publishes; the next ones wait `every`
    counter("ns", "enrollments_read").inc(2)
    worker.tick()
    assert progress.published(staging) == {"enrollments_read": 40}
    worker.flush()
    # Another worker process's file, beside this one's: the submitter sums them.
    (tmp_path / "progress-elsewhere.json").write_text('{"enrollments_read": 100, "report_rows_built": 9}')
    assert progress.published(staging) == {"enrollments_read": 142, "report_rows_built": 9}
    with caplog.at_level(logging.INFO, logger="programusers.report.progress"), \
            progress.shown("request R", every=0.05, staging_dir=staging):
        counter("ns", "report_rows_built").inc(1000)  # this process's tally is not the job's: not shown
        until_shown(caplog, "request R: 142 enrollment rows read, 9 report rows built")
    lines = lines_shown(caplog)
    assert lines and lines[-1] == "request R: 142 enrollment rows read, 9 report rows built"
