"""`programusers replay`: re-validating dead letters (pure), then replays of a real dead-letter topic into
the real Cassandra through the command line."""
import json
import logging
from datetime import UTC, datetime

import pytest
from ingest_cases import COLUMNS, create_topic, encode, event, expected_row, produce, row

from programusers import cli
from programusers.events import DeadLetter, EnrollmentUpsert
from programusers.io.kafka import KafkaRecord
from programusers.pipelines import ingest
from programusers.pipelines.replay import revalidate

FAILED_AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
ORIGINAL_MILLIS = 1_700_000_000_123  # the original record's Kafka time
OWN_MILLIS = 1_714_557_600_000  # the dead letter's own Kafka time


def dead_letter(value: bytes | None, reason: str, *, original_millis: int | None = ORIGINAL_MILLIS,
                offset: int = 9) -> bytes:
    """A dead-letter value as the ingest writes it (its own format function), for a record of `value`."""
    _, message = ingest.dead_letter_message(KafkaRecord("t.raw", 0, offset, original_millis, None, value),
                                            DeadLetter(reason, None, "then"), FAILED_AT)
    if original_millis is None:  # written before dead letters carried the original time
        message = json.dumps({k: v for k, v in json.loads(message).items() if k != "timestamp"}).encode()
    return message


def again(value: bytes, reason=None):
    return revalidate(KafkaRecord("t.failed", 1, 5, OWN_MILLIS, None, value), reason)


# --- revalidate (pure) ---

def test_a_payload_valid_today_becomes_the_mutation_the_ingest_would_have_written():
    payload = encode(event("p1", "u1", updated="2023-03-01T00:00:00Z"))
    context, mutation = again(dead_letter(payload, "write_failed"))
    assert context == (1, 5)
    assert isinstance(mutation, EnrollmentUpsert) and (mutation.program_id, mutation.user_id) == ("p1", "u1")
    assert mutation.timestamp_micros == int(datetime(2023, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)


def test_an_event_without_dates_is_stamped_with_the_original_kafka_time_else_the_dead_letters_own():
    undated = {k: v for k, v in event("p1", "u1").items() if k not in ("createdAt", "updatedAt")}
    assert again(dead_letter(encode(undated), "write_failed"))[1].timestamp_micros == ORIGINAL_MILLIS * 1000
    legacy = dead_letter(encode(undated), "write_failed", original_millis=None)
    assert "timestamp" not in json.loads(legacy)
    assert again(legacy)[1].timestamp_micros == OWN_MILLIS * 1000


@pytest.mark.parametrize("value,reason", [
    (dead_letter(b"{not json", "invalid_json"), "invalid_json"),
    (dead_letter(None, "invalid_json"), "invalid_json"),  # a tombstone
    (dead_letter(encode(event("p1", 42)), "wrong_type"), "wrong_type"),
    (b"plain text", "not_a_dead_letter"),
    (json.dumps({"reason": "x"}).encode(), "not_a_dead_letter"),
    (None, "not_a_dead_letter"),
])
def test_still_bad_dead_letters_say_why_today(value, reason):
    context, dead = again(value)
    assert isinstance(dead, DeadLetter) and dead.reason == reason and context == (1, 5)


def test_a_reason_filter_skips_the_other_reasons():
    value = dead_letter(encode(event("p1", "u1")), "write_failed")
    assert again(value, "invalid_json") is None
    assert isinstance(again(value, "write_failed")[1], EnrollmentUpsert)


def test_since_is_utc_unless_it_says_otherwise():
    assert ingest.iso_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert ingest.iso_time("2024-05-01T12:00:00+05:30") == datetime(2024, 5, 1, 6, 30, tzinfo=UTC)


# --- replays of a real dead-letter topic ---

def stored(session, keyspace, program):
    query = (f"SELECT {COLUMNS}, writetime(program_name) AS stamp FROM {keyspace}.program_enrollment "
             "WHERE program_id = %s")
    found = {}
    for stored_row in session.execute(query, [program]):
        values = row(stored_row)
        found[stored_row.user_id] = values, values.pop("stamp")
    return found


def run_replay(caplog, *flags) -> str:
    caplog.clear()
    assert cli.main(["replay", *flags]) == 0
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replay of")]
    return line


@pytest.mark.services
def test_replay_writes_what_is_valid_now_leaves_the_rest_and_a_second_run_changes_nothing(
        cassandra_session, test_schema, unique, caplog):
    caplog.set_level(logging.INFO)
    keyspace, program, topic = test_schema["programs_keyspace"], f"p-{unique}", f"test.replay.{unique}.failed"
    rejected_then = event(program, "u-rejected", updated="2023-03-01T00:00:00Z", name="Replayed One")
    # Valid by today's rules: an epoch-millis $numberLong date, as if an older parser had refused it.
    newer_format = event(program, "u-format", updatedAt={"$date": {"$numberLong": "1673505056829"}})
    undated = {k: v for k, v in event(program, "u-undated").items() if k not in ("createdAt", "updatedAt")}
    messages = [
        dead_letter(encode(rejected_then), "write_failed", offset=1),
        dead_letter(encode(newer_format), "bad_timestamp", offset=2),
        dead_letter(encode(undated), "write_failed", offset=3),
        dead_letter(b"{not json", "invalid_json", offset=4),
        dead_letter(encode(event(program, "u" * 70_000)), "write_failed", offset=5),  # Cassandra rejects it again
    ]
    produce(topic, [(str(i).encode(), value) for i, value in enumerate(messages)])  # two partitions
    flags = [f"--dead-letter-topic={topic}", f"--programs-keyspace={keyspace}"]

    line = run_replay(caplog, *flags)
    assert line.endswith("5 dead letter(s) read, 0 of another reason skipped, 4 valid now: 3 row(s) written, "
                         "0 deleted; 2 still bad (invalid_json=1, write_failed=1); the dead letters stay in the topic")
    rows = stored(cassandra_session, keyspace, program)
    assert {user: values for user, (values, _) in rows.items()} == {
        "u-rejected": expected_row(rejected_then),
        "u-format": expected_row({**newer_format, "updatedAt": "2023-01-12"}),
        "u-undated": {**expected_row({**undated, "updatedAt": "2023-01-01"}), "created_at": None, "updated_at": None}}
    assert rows["u-rejected"][1] == int(datetime(2023, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
    assert rows["u-format"][1] == 1_673_505_056_829_000
    assert rows["u-undated"][1] == ORIGINAL_MILLIS * 1000

    run_replay(caplog, *flags)
    assert stored(cassandra_session, keyspace, program) == rows

    assert run_replay(caplog, *flags, "--reason", "bad_timestamp").endswith(
        "5 dead letter(s) read, 4 of another reason skipped, 1 valid now: 1 row(s) written, 0 deleted; 0 still bad; "
        "the dead letters stay in the topic")
    assert "0 dead letter(s) read" in run_replay(caplog, *flags, "--since", "2999-01-01")
    assert stored(cassandra_session, keyspace, program) == rows
    logged = caplog.text
    assert "Replayed One" not in logged and "ANANTAPUR" not in logged  # payload values never logged


@pytest.mark.services
def test_replay_since_a_time_takes_only_the_dead_letters_written_from_then_on(cassandra_session, test_schema,
                                                                                unique, caplog):
    caplog.set_level(logging.INFO)
    keyspace, program, topic = test_schema["programs_keyspace"], f"p-{unique}", f"test.replay.{unique}.since"
    old, recent = event(program, "u-old"), event(program, "u-recent")
    create_topic(topic, 1)
    produce(topic, [(b"a", dead_letter(encode(old), "write_failed")), (b"b", dead_letter(encode(recent), "write_failed"))],
            timestamps=[int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000),
                        int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)])
    line = run_replay(caplog, f"--dead-letter-topic={topic}", f"--programs-keyspace={keyspace}",
                      "--since", "2025-01-01T00:00:00+05:30")
    assert "1 dead letter(s) read" in line and "1 row(s) written" in line
    assert set(stored(cassandra_session, keyspace, program)) == {"u-recent"}
