"""The ingest pipeline without Kafka: options and CLI wiring, the dead-letter format, and IngestEvents on
the DirectRunner over in-memory records, writing to the real Cassandra."""
import json
import time
from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import LOCAL_CASSANDRA, outcomes
from ingest_cases import COLUMNS, bad_events, consume, encode, event, expected_row, row

from programusers import metrics, runners, settings
from programusers.events import DeadLetter
from programusers.io import kafka
from programusers.io.kafka import KafkaClientConfig, KafkaRecord
from programusers.options import StoreOptions
from programusers.pipelines import ingest
from programusers.pipelines.ingest import CassandraWriteOptions, DeadLetterOptions, IngestEvents, IngestOptions
from programusers.transforms.enrollments import WriteEnrollments

# --- options and the command line ---

def test_options_default_to_the_settings():
    options = IngestOptions([])
    assert StoreOptions([]).kafka_bootstrap == settings.KAFKA_BOOTSTRAP
    assert options.input_topic == f"{settings.ENV_NAME}.ml.programUsers.raw"
    assert options.view_as(DeadLetterOptions).dead_letter_topic == f"{settings.ENV_NAME}.ml.programUsers.failed"
    assert options.expansion_service == settings.EXPANSION_SERVICE
    writes = options.view_as(CassandraWriteOptions)
    assert (StoreOptions([]).cassandra_hosts, writes.programs_keyspace) == (settings.CASSANDRA_HOSTS,
                                                                            settings.PROGRAMS_KEYSPACE)
    assert options.commit_offsets and writes.consistency == "LOCAL_QUORUM"
    assert options.max_records is None and options.max_read_time is None


@pytest.mark.parametrize("argv,limit", [
    ([], None),  # streaming: hold for ever
    (["--max-records", "5"], ingest.DEFAULT_BOUNDED_OUTAGE),
    (["--max-read-time", "5", "--max-write-outage", "0"], None),
    (["--max-write-outage", "900"], 900),
])
def test_the_write_outage_limit_defaults_to_ten_minutes_for_bounded_runs_only(argv, limit):
    assert IngestOptions(argv).write_outage_limit == limit


# --- pure helpers ---

def test_arrival_time_is_the_kafka_timestamp_else_now():
    assert ingest.arrival_micros(1_700_000_000_123) == 1_700_000_000_123_000
    assert abs(ingest.arrival_micros(-1) - time.time_ns() // 1000) < 5_000_000


def test_dead_letter_message_keeps_the_key_and_the_original_payload():
    failed_at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    dead = DeadLetter("invalid_json", None, "Expecting value at line 1 column 1")
    key, value = ingest.dead_letter_message(KafkaRecord("t.raw", 1, 42, 1_714_557_000_000, b"k", b"nope"), dead,
                                            failed_at)
    assert key == b"k"
    assert json.loads(value) == {"reason": "invalid_json", "field": None, "detail": dead.detail, "payload": "nope",
                                 "topic": "t.raw", "partition": 1, "offset": 42, "timestamp": 1_714_557_000_000,
                                 "failed_at": "2024-05-01T10:00:00.000Z"}
    key, value = ingest.dead_letter_message(KafkaRecord("t.raw", 0, 7, 0, None, None), dead, failed_at)
    assert (key, json.loads(value)["payload"]) == (b"t.raw/0/7", None)


# --- the pipeline over in-memory records ---

@pytest.mark.services
def test_good_and_bad_events_split_are_counted_and_every_record_is_done_once(cassandra_session, test_schema, unique):
    keyspace, program, failed = test_schema["programs_keyspace"], f"p-{unique}", f"test.split.{unique}.failed"
    good = [event(program, f"u{i}", district=f"D{i}") for i in range(5)]
    leave = event(program, "u0", updated="2023-02-01T00:00:00Z", deleted=True)
    bad = bad_events(program)
    values = [encode(e) for e in good] + [encode(leave)] + [value for value, _, _ in bad]
    records = [KafkaRecord("t.raw", 0, offset, 1_700_000_000_000, None, value) for offset, value in enumerate(values)]
    first_bad = len(good) + 1

    pipeline = BeamTestPipeline(options=runners.pipeline_options("DirectRunner"))
    done = (pipeline
            | beam.Create(records)
            | IngestEvents(WriteEnrollments(LOCAL_CASSANDRA, keyspace),
                           kafka.WriteAcknowledged(KafkaClientConfig(settings.KAFKA_BOOTSTRAP), failed)))
    # Each record comes out once: its row written, or its dead letter acknowledged by Kafka.
    assert_that(done | beam.Flatten() | beam.Map(lambda record: record.offset), equal_to(list(range(len(records)))))
    result = pipeline.run()
    result.wait_until_finish()

    payloads = [None if v is None else v.decode("utf-8", errors="replace") for v, _, _ in bad]
    assert sorted((key, dead["reason"], dead["field"], dead["offset"], dead["payload"])
                  for key, dead in consume(failed, len(bad))) == sorted(
        (f"t.raw/0/{first_bad + i}".encode(), reason, field, first_bad + i, payload)
        for i, ((_, reason, field), payload) in enumerate(zip(bad, payloads)))
    assert outcomes(metrics.counters(result)) == {
        "events_read": len(records), "rows_written": 5, "rows_deleted": 1,
        "dead_lettered_invalid_json": 3, "dead_lettered_not_an_object": 1, "dead_lettered_missing_field": 2,
        "dead_lettered_wrong_type": 2, "dead_lettered_bad_timestamp": 2, "dead_lettered_write_failed": 1}
    stored = cassandra_session.execute(
        f"SELECT {COLUMNS} FROM {keyspace}.program_enrollment WHERE program_id = %s", [program])
    assert sorted((row(r) for r in stored), key=lambda r: r["user_id"]) == [expected_row(e) for e in good[1:]]
