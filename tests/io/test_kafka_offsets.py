"""The offset arithmetic of io/kafka/ (pure): a partition's done runs, the contiguous watermark over
them, and a record cap shared among partitions; and asking a busy group coordinator again."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from programusers.io import backoff, kafka
from programusers.io.kafka import OffsetRange, advance, ask_the_group, commits, runs_of, share_records


@given(st.sets(st.integers(0, 300)))
def test_runs_cover_exactly_the_offsets_and_are_fewest(offsets):
    runs = runs_of(offsets)
    assert {o for start, end in runs for o in range(start, end)} == offsets
    assert all(end < start for (_, end), (start, _) in zip(runs, runs[1:]))  # apart, so none could merge


@given(st.integers(0, 50), st.sets(st.integers(0, 200)), st.randoms())
def test_the_watermark_stops_at_the_first_offset_not_done(start, done, random):
    offsets = sorted(done)
    runs = runs_of(offsets)
    random.shuffle(runs)
    position, left = advance(start, runs)
    expected = start
    while expected in done:
        expected += 1
    assert position == expected
    assert {o for s, e in left for o in range(s, e)} == {o for o in done if o > position}


@given(st.integers(0, 50), st.sets(st.integers(0, 200)), st.sets(st.integers(0, 200)))
def test_offsets_without_a_record_are_passed_and_a_record_not_done_holds_the_watermark(start, done, no_record):
    # `no_record`: offsets that hold no record (compacted away, transaction markers).
    def is_gap(position, until):
        return all(o in no_record for o in range(position, until))

    records_done = done - no_record
    position, _ = advance(start, runs_of(records_done), is_gap)
    assert set(range(start, position)) <= records_done | no_record  # never past a record not done
    # And as far as it may go: it stands on no done record, and before the next one lies a record.
    assert position not in records_done
    beyond = [o for o in records_done if o > position]
    assert not beyond or not is_gap(position, min(beyond))


def test_a_transaction_marker_between_done_runs_is_passed_only_when_kafka_says_it_holds_no_record():
    runs = [(0, 5), (6, 11)]
    assert advance(0, runs) == (5, [(6, 11)])
    assert advance(0, runs, lambda position, until: True) == (11, [])
    assert advance(0, runs, lambda position, until: False) == (5, [(6, 11)])


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 2000)), min_size=1, max_size=6),
       st.integers(0, 5000))
def test_a_record_cap_is_exact_and_shared_as_evenly_as_the_partitions_allow(bounds, total):
    ranges = [OffsetRange("t", p, start, start + size) for p, (start, size) in enumerate(bounds)]
    cut = share_records(ranges, total)
    assert [(r.partition, r.start) for r in cut] == [(r.partition, r.start) for r in ranges]
    assert all(0 <= c.size <= r.size for c, r in zip(cut, ranges))
    assert sum(c.size for c in cut) == min(total, sum(r.size for r in ranges))
    # A partition cut short got at least as much as any other: none is starved while another is full.
    short = [c.size for c, r in zip(cut, ranges) if c.size < r.size]
    assert not short or max(short) - min(short) <= 1 and min(short) >= max(c.size for c in cut) - 1


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 60)), max_size=200))
def test_a_bundles_runs_are_its_offsets_folded_as_they_come(done):
    # The in-process runner reads a whole backfill in one bundle: offsets are folded into runs as they come
    # (every FOLD_OFFSETS, here 7), and the bundle ends with the same fewest runs as if kept one by one.
    runs = commits._RunsFn()
    runs.start_bundle()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commits, "FOLD_OFFSETS", 7)
        for partition, offset in done:
            runs.process(kafka.KafkaRecord("t", partition, offset, 0, None, b"v"))
            assert all(len(offsets) < 7 for offsets in runs._offsets.values())
    emitted = [w.value for w in runs.finish_bundle()]
    assert sorted(emitted) == sorted((("t", p), run) for p in (0, 1)
                                     for run in runs_of(o for q, o in done if q == p))


def test_skewed_partitions_share_a_cap_with_the_short_ones_whole():
    ranges = [OffsetRange("t", 0, 0, 19_990), OffsetRange("t", 1, 0, 10), OffsetRange("t", 2, 0, 0)]
    assert [r.size for r in share_records(ranges, 500)] == [490, 10, 0]


@given(st.integers(0, 50), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 30)), max_size=25))
def test_runs_that_overlap_touch_or_repeat_count_as_their_offsets(start, spans):
    # Retried and split bundles report runs that overlap, touch or repeat one another.
    runs = [(s, s + n) for s, n in spans]
    done = {o for s, e in runs for o in range(s, e)}
    position, left = advance(start, runs)
    expected = start
    while expected in done:
        expected += 1
    assert position == expected
    assert {o for s, e in left for o in range(s, e)} == {o for o in done if o >= position}
    assert all(end < nxt for (_, end), (nxt, _) in zip(left, left[1:]))  # merged: apart and in order


def test_a_busy_group_coordinator_is_asked_again_and_other_errors_are_not(monkeypatch):
    # A broker started moments ago answers NOT_COORDINATOR until its offsets topic is loaded (seen in CI).
    from confluent_kafka import KafkaError, KafkaException

    pauses = []
    monkeypatch.setattr(backoff.time, "sleep", pauses.append)
    answers = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, None]
    asked = []

    def committed(partitions, timeout):
        asked.append(partitions)
        code = answers[len(asked) - 1]
        if code is not None:
            raise KafkaException(KafkaError(code))
        return ["offsets"]

    assert ask_the_group(committed, ["p0"], timeout=30) == ["offsets"]
    assert len(asked) == 3
    assert 0.05 <= pauses[0] < 0.1 and 0.1 <= pauses[1] < 0.2  # doubling, the second half of each step random

    def refused(partitions, timeout):
        asked.append(partitions)
        raise KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))

    asked.clear()
    with pytest.raises(KafkaException):
        ask_the_group(refused, ["p0"], timeout=30)
    assert len(asked) == 1


def test_a_coordinator_busy_for_too_long_fails_the_ask(monkeypatch):
    from confluent_kafka import KafkaError, KafkaException

    clock = iter(range(0, 10_000, 5))  # each look at the clock: 5 s later
    monkeypatch.setattr(backoff.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(backoff.time, "sleep", lambda seconds: None)

    def busy():
        raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))

    with pytest.raises(KafkaException):
        ask_the_group(busy)
