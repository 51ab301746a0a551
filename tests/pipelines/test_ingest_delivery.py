"""What the ingest commits and reads, on the real Kafka and Cassandra, on PrismRunner (SPEC §5, "Ingest
delivery"): a streaming ingest killed and started again loses nothing and resumes from its commits; a
Cassandra pause holds the committed offsets; backfills read exact ranges whatever the partitions' skew,
end as soon as they are read, and hand over to a streaming run; a backfill cut short exits non-zero;
transaction markers do not hold the watermark."""
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from ingest_cases import (
    committed_offsets,
    count_rows,
    create_topic,
    encode,
    end_offsets,
    event,
    expected_row,
    paused_cassandra,
    produce,
    record_count,
    stored,
)

from programusers import cli, settings
from programusers.io.kafka import ask_the_group

pytestmark = pytest.mark.services
EVENTS = 20_000


def topics(unique: str, name: str) -> tuple[str, str, str]:
    return f"test.{name}.{unique}.raw", f"test.{name}.{unique}.failed", f"test.{name}.{unique}"


def flags(raw: str, failed: str, group: str, keyspace: str, *more: str) -> list[str]:
    return [f"--input-topic={raw}", f"--dead-letter-topic={failed}", f"--consumer-group={group}",
            f"--programs-keyspace={keyspace}", *more]


def events_of(program: str, count: int, first: int = 0) -> list[dict]:
    """One event per user: a row per record, so that rows written can be set against offsets committed."""
    return [event(program, f"u{i}", name=f"Name {i}") for i in range(first, first + count)]


def messages(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["userId"].encode(), encode(e)) for e in events]


def events_read(log: str) -> int:
    [count] = re.findall(r"ingest \w+ after .*\bevents_read=(\d+)", log) or ["0"]
    return int(count)


def committed_records(topic: str, group: str) -> int:
    """Records below the committed offsets of a topic whose offsets all hold records (no transactions)."""
    return sum(max(offset, 0) for offset in committed_offsets(topic, group))


def wait_until(condition, seconds: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process is None or process.poll() is None, f"the ingest ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"not {what} within {seconds:.0f} s"
        time.sleep(0.5)


@contextlib.contextmanager
def ingest_process(argv: list[str], log_path):
    """`programusers ingest --runner PrismRunner ...` as a process of its own (with Prism in its group),
    killed with its group if still running after the block."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "programusers", "ingest", "--runner", "PrismRunner", *argv],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def started(topic: str, group: str, process: subprocess.Popen) -> None:
    """Waits until the streaming ingest's CommitOffsets is up: it commits where each partition starts."""
    wait_until(lambda: all(o >= 0 for o in committed_offsets(topic, group)), 240, "the ingest started", process)


@contextlib.contextmanager
def produced_while_streaming(topic: str, events: list[dict], per_second: int = 2000):
    """Produces `events` in the background at about `per_second`, as live traffic does (a backlog would
    reach a streaming read in one bundle per partition); waits for the last one after the block."""
    thread = threading.Thread(target=lambda: [
        (produce(topic, messages(events[first:first + per_second // 4])), time.sleep(0.25))
        for first in range(0, len(events), per_second // 4)])
    thread.start()
    try:
        yield
    finally:
        thread.join()


def stopped(process: subprocess.Popen, log_path) -> str:
    """Stops a streaming ingest as Kubernetes does (SIGTERM); it cancels its job and exits 0."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0, log_path.read_text()[-3000:]
    return log_path.read_text()


def in_process(argv: list[str], caplog) -> tuple[int, str, float]:
    """`programusers ingest ...` in this process: (exit code, its log, seconds)."""
    caplog.clear()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="programusers"):
        code = cli.main(["ingest", *argv])
    return code, "\n".join(r.getMessage() for r in caplog.records), time.monotonic() - started


def expected_rows(events: list[dict]) -> dict:
    return {(e["programId"], e["userId"]): expected_row(e) for e in events}


def rows_of(session, keyspace: str, program: str) -> dict:
    return {key: values for key, (values, _) in stored(session, keyspace, [program]).items()}


def test_a_streaming_ingest_killed_and_started_again_resumes_from_its_commits_and_loses_nothing(
        cassandra_session, test_schema, unique, tmp_path):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "kill")
    good = events_of(program, EVENTS)
    create_topic(raw, 2)
    argv = flags(raw, failed, group, keyspace, "--commit-every=1")

    with ingest_process(argv, tmp_path / "first.log") as first:
        started(raw, group, first)
        with produced_while_streaming(raw, good):
            wait_until(lambda: count_rows(cassandra_session, keyspace, program) >= 6000, 240, "6,000 rows written",
                       first)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            committed, written = committed_records(raw, group), count_rows(cassandra_session, keyspace, program)
    assert 0 < committed <= written < len(good)  # committed during the run, never past an unwritten record

    with ingest_process(argv, tmp_path / "second.log") as second:
        wait_until(lambda: committed_offsets(raw, group) == end_offsets(raw), 300, "committed to the end", second)
        log = stopped(second, tmp_path / "second.log")
    # The restart read from the committed offsets: what was written after the last commit, and the rest.
    assert events_read(log) == len(good) - committed
    print(f"\nkilled after {written} rows written, {committed} committed: the restart wrote "
          f"{written - committed} of them again")
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)
    assert record_count(failed) == 0


def test_a_cassandra_pause_holds_the_committed_offsets_of_a_streaming_ingest(cassandra_session, test_schema, unique,
                                                                             tmp_path):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "hold")
    good = events_of(program, EVENTS)
    create_topic(raw, 2)
    argv = flags(raw, failed, group, keyspace, "--commit-every=1", "--write-concurrency=8")

    with ingest_process(argv, tmp_path / "ingest.log") as run:
        started(raw, group, run)
        with produced_while_streaming(raw, good):
            wait_until(lambda: count_rows(cassandra_session, keyspace, program) >= 4000, 240, "4,000 rows written",
                       run)
            with paused_cassandra():
                time.sleep(12)  # past the sink's 10 s request timeout: the writes in flight fail and wait
                held = committed_offsets(raw, group)
                time.sleep(8)
                assert committed_offsets(raw, group) == held
        assert sum(max(o, 0) for o in held) <= count_rows(cassandra_session, keyspace, program)
        assert 0 < sum(max(o, 0) for o in held) < len(good)  # the pause came mid-stream
        wait_until(lambda: committed_offsets(raw, group) == end_offsets(raw), 300, "committed to the end", run)
        stopped(run, tmp_path / "ingest.log")
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)
    assert record_count(failed) == 0


def test_backfills_read_exact_ranges_of_skewed_partitions_then_a_streaming_run_reads_only_what_came_after(
        cassandra_session, test_schema, unique, tmp_path, caplog):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "skew")
    create_topic(raw, 3)
    good = events_of(program, EVENTS)
    produce(raw, messages(good), partitions=[0] * (EVENTS - 10) + [1] * 10)  # all but 10 / 10 / 0
    argv = ["--runner", "PrismRunner", *flags(raw, failed, group, keyspace)]

    code, log, _ = in_process([*argv, "--max-records=500"], caplog)
    assert (code, events_read(log)) == (0, 500)
    assert committed_offsets(raw, group) == [490, 10, 0]  # the short partitions whole, the long one the rest

    code, log, seconds = in_process([*argv, "--backfill", "--max-read-time=600"], caplog)
    assert (code, events_read(log)) == (0, EVENTS - 500)  # from the committed offsets, to the end
    assert seconds < 300  # it ended when the ranges were read, not at its time limit
    assert committed_offsets(raw, group) == end_offsets(raw) == [EVENTS - 10, 10, 0]
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)

    later = events_of(program, 100, first=EVENTS)
    produce(raw, messages(later))
    with ingest_process(flags(raw, failed, group, keyspace, "--commit-every=1"), tmp_path / "ingest.log") as run:
        wait_until(lambda: committed_offsets(raw, group) == end_offsets(raw), 240, "committed to the end", run)
        log = stopped(run, tmp_path / "ingest.log")
    assert events_read(log) == len(later)
    for partition in range(3):  # each partition's lag is reported, as counts
        assert re.search(rf"Kafka lag: {re.escape(raw)}\[{partition}\] \d+ record\(s\) behind the end offset \d+ "
                         rf"\(committed \d+\)", log)
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good + later)
    assert record_count(failed) == 0


def test_a_backfill_of_even_partitions_ends_as_soon_as_it_is_read(cassandra_session, test_schema, unique, caplog):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "even")
    create_topic(raw, 2)
    good = events_of(program, EVENTS)
    produce(raw, messages(good), partitions=[i % 2 for i in range(EVENTS)])
    code, log, seconds = in_process(["--runner", "PrismRunner", *flags(raw, failed, group, keyspace),
                                     "--backfill", "--max-read-time=600"], caplog)
    assert (code, events_read(log)) == (0, EVENTS) and seconds < 300
    assert committed_offsets(raw, group) == [EVENTS // 2, EVENTS // 2]
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)


def test_a_backfill_cut_short_by_its_time_limit_exits_non_zero_and_the_next_one_reads_the_rest(
        cassandra_session, test_schema, unique, caplog):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "short")
    good = events_of(program, EVENTS)
    produce(raw, messages(good))
    argv = ["--runner", "PrismRunner", *flags(raw, failed, group, keyspace)]

    # One statement in flight at a time: reading, held back by the writes, cannot finish in 20 s (the time
    # counts from the job's start, so a slow machine's start-up must leave some of it for reading).
    code, log, _ = in_process([*argv, "--max-read-time=20", "--write-concurrency=1", "--write-batch-bytes=0"],
                              caplog)
    read = events_read(log)
    assert code == 4 and 0 < read < EVENTS
    assert f"ingest stopped before its ranges were read: {read} of {EVENTS} record(s) read" in log
    assert committed_records(raw, group) == read == count_rows(cassandra_session, keyspace, program)

    code, log, _ = in_process([*argv, "--backfill"], caplog)
    assert (code, events_read(log)) == (0, EVENTS - read)
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)


def test_transaction_markers_do_not_hold_the_committed_offset(cassandra_session, test_schema, unique, caplog):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "markers")
    create_topic(raw, 1)
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "transactional.id": f"test-{unique}"})
    producer.init_transactions(30)
    good = events_of(program, 15)
    for first in range(0, 15, 5):  # offsets 0-4, a marker at 5, 6-10, a marker at 11, 12-16, a marker at 17
        producer.begin_transaction()
        for key, value in messages(good[first:first + 5]):
            producer.produce(raw, key=key, value=value)
        producer.commit_transaction(30)
    argv = [*flags(raw, failed, group, keyspace), "--backfill"]  # no --runner: a backfill runs in this process

    code, log, _ = in_process(argv, caplog)
    assert (code, events_read(log)) == (0, 15)
    assert committed_offsets(raw, group) == [17]  # past the markers between records; the last one waits
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)
    code, log, _ = in_process(argv, caplog)
    assert (code, events_read(log)) == (0, 0)


def test_committed_offsets_past_the_end_of_a_topic_made_anew_count_for_none(cassandra_session, test_schema, unique,
                                                                           caplog):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "anew")
    create_topic(raw, 1)
    good = events_of(program, 5)
    produce(raw, messages(good))
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": group})
    ask_the_group(consumer.commit, offsets=[TopicPartition(raw, 0, 1000)], asynchronous=False)  # as the old topic left it
    consumer.close()
    code, log, _ = in_process(["--runner", "DirectRunner", *flags(raw, failed, group, keyspace), "--backfill"], caplog)
    assert (code, events_read(log)) == (0, 5)  # from the earliest, as Kafka's own consumers reset
    assert committed_offsets(raw, group) == [5]
    assert rows_of(cassandra_session, keyspace, program) == expected_rows(good)


def test_a_backfill_of_a_time_window_leaves_the_groups_offsets_where_they_were(cassandra_session, test_schema,
                                                                             unique, caplog):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed, group = topics(unique, "window")
    create_topic(raw, 1)
    good = events_of(program, 6)
    hour = 3_600_000
    produce(raw, messages(good), timestamps=[1_700_000_000_000 + i * hour for i in range(6)])  # an hour apart
    argv = flags(raw, failed, group, keyspace)  # no --runner: a backfill runs in this process
    code, log, _ = in_process([*argv, "--max-records=2"], caplog)
    assert (code, committed_offsets(raw, group)) == (0, [2])
    # Records 3 and 4 only (record 0 is stamped 2023-11-14T22:13:20Z): read, written, and nothing committed.
    code, log, _ = in_process([*argv, "--from=2023-11-15T01:00", "--until=2023-11-15T03:00"], caplog)
    assert (code, events_read(log)) == (0, 2) and "it commits no offset" in log
    assert committed_offsets(raw, group) == [2]
    assert set(rows_of(cassandra_session, keyspace, program)) == {(program, f"u{i}") for i in (0, 1, 3, 4)}
