"""The workers' side of a long pipeline's progress: counters that also count into the process's tally,
published into the job's staging folder."""
import json

from programusers.report import tally


def test_the_first_tick_publishes_on_a_machine_booted_seconds_ago(tmp_path, monkeypatch):
    monkeypatch.setattr(tally.time, "monotonic", lambda: 5.0)  # the clock of a CI machine just booted
    worker = tally.Publisher(str(tmp_path), every=10)
    worker.setup()
    tally.counter("ns", "records").inc(4)
    worker.tick()
    (published,) = tmp_path.glob(tally.PUBLISHED)
    assert json.loads(published.read_text()) == {"records": 4}
