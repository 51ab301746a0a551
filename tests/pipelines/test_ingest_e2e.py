"""End to end on the local stack: events produced to Kafka, a bounded ingest on Prism, the rows in
Cassandra and the dead letters read back from Kafka; then a replay of the same records through the
command line on the DirectRunner, which must change no row. Then outages: Cassandra paused mid-run
(SIGSTOP, always resumed), and unreachable past --max-write-outage."""
import time
from datetime import UTC, datetime

import pytest
from apache_beam.runners.runner import PipelineState
from conftest import outcomes
from ingest_cases import (
    bad_events,
    committed_offsets,
    consume,
    count_rows,
    encode,
    end_offsets,
    event,
    expected_row,
    paused_cassandra,
    produce,
    record_count,
    stored,
)

from programusers import cli, metrics, runners
from programusers.pipelines import ingest

pytestmark = pytest.mark.services
USERS_PER_PROGRAM = 120


def micros(iso: str) -> int:
    return int(datetime.fromisoformat(iso).astimezone(UTC).timestamp() * 1_000_000)


def test_ingest_end_to_end_then_replay(cassandra_session, test_schema, unique):
    keyspace = test_schema["programs_keyspace"]
    raw, failed, group = f"test.ingest.{unique}.raw", f"test.ingest.{unique}.failed", f"test.ingest.{unique}"
    programs = [f"p{n}-{unique}" for n in range(3)]
    good = [event(program, f"u{i}", district=f"D{i % 7}", user_type=("teacher", "Administrator")[i % 2],
                  updated=f"2023-01-{1 + i % 28:02d}T08:00:00Z")
            for program in programs for i in range(USERS_PER_PROGRAM)]
    newer = event(programs[0], "late", updated="2023-03-01T00:00:00Z", name="Newer")
    older = event(programs[0], "late", updated="2023-02-01T00:00:00Z", name="Older")  # arrives after `newer`
    join = event(programs[1], "leaver", updated="2023-01-10T00:00:00Z")
    leave = event(programs[1], "leaver", updated="2023-01-20T00:00:00Z", deleted=True)
    bad = bad_events(programs[2])
    half = len(good) // 2
    messages = ([(e["userId"].encode(), encode(e)) for e in good[:half] + [newer, older, join, leave]]
                + [(None, value) for value, _, _ in bad]
                + [(e["userId"].encode(), encode(e)) for e in good[half:]])
    coordinates = produce(raw, messages)
    flags = [f"--input-topic={raw}", f"--dead-letter-topic={failed}", f"--consumer-group={group}",
             f"--programs-keyspace={keyspace}", f"--max-records={len(messages)}"]

    result = ingest.run(runners.pipeline_options("PrismRunner", flags))
    assert result.wait_until_finish() == PipelineState.DONE
    assert outcomes(metrics.counters(result)) == {
        "events_read": len(messages), "rows_written": len(good) + 3, "rows_deleted": 1,
        "dead_lettered_invalid_json": 3, "dead_lettered_not_an_object": 1, "dead_lettered_missing_field": 2,
        "dead_lettered_wrong_type": 2, "dead_lettered_bad_timestamp": 2, "dead_lettered_write_failed": 1,
        "offset_commits": 2}  # one per partition, at the end

    rows = stored(cassandra_session, keyspace, programs)
    expected = {(e["programId"], e["userId"]): expected_row(e) for e in good + [newer]}
    assert {key: values for key, (values, _) in rows.items()} == expected
    assert rows[(programs[0], "late")][1] == micros("2023-03-01T00:00:00Z")  # the older event did not win
    assert (programs[1], "leaver") not in rows

    bad_start = half + 4
    expected_dead = sorted(
        (f"{raw}/{partition}/{offset}".encode(), reason, field,
         None if value is None else value.decode("utf-8", errors="replace"), raw, partition, offset)
        for (value, reason, field), (partition, offset) in zip(bad, coordinates[bad_start:]))
    dead = consume(failed, len(bad))
    assert sorted((key, d["reason"], d["field"], d["payload"], d["topic"], d["partition"], d["offset"])
                  for key, d in dead) == expected_dead
    # Committed at the end of the run: every partition's end offset, as every record is written or dead-lettered.
    assert committed_offsets(raw, group) == end_offsets(raw)

    # The same records again, through the command line, on the other local runner: another group.
    again = [f for f in flags if not f.startswith("--consumer-group")] + [f"--consumer-group={group}.again"]
    assert cli.main(["ingest", "--runner", "DirectRunner", *again]) == 0
    assert stored(cassandra_session, keyspace, programs) == rows
    replayed = consume(failed, 2 * len(bad))
    assert sorted(key for key, _ in replayed) == sorted(2 * [key for key, *_ in expected_dead])


def test_a_cassandra_pause_during_a_bounded_ingest_holds_it_and_loses_nothing(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    raw, failed = f"test.pause.{unique}.raw", f"test.pause.{unique}.failed"
    good = [event(program, f"u{i}", name=f"Name {i}") for i in range(4000)]
    produce(raw, [(e["userId"].encode(), encode(e)) for e in good])
    flags = [f"--input-topic={raw}", f"--dead-letter-topic={failed}", f"--consumer-group=test.pause.{unique}",
             f"--programs-keyspace={keyspace}", f"--max-records={len(good)}", "--write-concurrency=8"]
    result = ingest.run(runners.pipeline_options("PrismRunner", flags))
    deadline = time.monotonic() + 120
    while count_rows(cassandra_session, keyspace, program) == 0:  # the writes have started
        assert time.monotonic() < deadline, "no row written within 2 minutes"
        time.sleep(0.2)
    with paused_cassandra():
        time.sleep(12)  # past the sink's 10 s request timeout: in-flight writes fail and are retried
    assert result.wait_until_finish() == PipelineState.DONE
    totals = metrics.counters(result)
    assert totals["rows_written"] == len(good) and "dead_lettered_write_failed" not in totals
    assert count_rows(cassandra_session, keyspace, program) == len(good)
    assert record_count(failed) == 0


def test_an_outage_past_max_write_outage_exits_non_zero_naming_cassandra(test_schema, unique, caplog):
    raw = f"test.outage.{unique}.raw"
    produce(raw, [(b"k", encode(event(f"p-{unique}", "u1")))])
    started = time.monotonic()
    # Nothing listens on port 1: every connection is refused, as when Cassandra is down.
    code = cli.main(["ingest", "--runner", "PrismRunner", f"--input-topic={raw}", "--max-records=1",
                     f"--dead-letter-topic=test.outage.{unique}.failed", f"--consumer-group=test.outage.{unique}",
                     "--cassandra-port=1", "--max-write-outage=3", "--retry-backoff=0.2"])
    assert code == 3
    assert time.monotonic() - started < 120
    [message] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingest stopped")]
    assert message.startswith("ingest stopped: Cassandra unreachable for ")
    assert "more than the outage limit of 3 s" in message and "(--max-write-outage); none dead-lettered" in message
    assert message.endswith("re-run once it answers")
