"""Events for the ingest tests: a compact good event with its expected row, and a catalogue of bad ones."""
import contextlib
import json
import os
import signal
import time
import uuid
from datetime import date

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from programusers import settings
from programusers.io.kafka import ask_the_group


def event(program: str, user: str, *, updated: str = "2023-01-12T06:30:56.829Z", name: str = "Program One",
          district: str = "ANANTAPUR", user_type: str = "teacher", **top) -> dict:
    return {"programId": program, "programName": name, "programExternalId": f"EXT-{program}",
            "requestForPIIConsent": True, "userId": user,
            "userProfile": {"userLocations": [{"type": "District", "name": district, "id": f"id-{district}",
                                               "code": 2822}],
                            "profileUserTypes": [{"type": user_type, "subType": "hm"}],
                            "rootOrg": {"id": "org-1", "orgName": "Org One"}},
            "createdAt": "2023-01-01T00:00:00Z", "updatedAt": updated, **top}


def expected_row(event: dict) -> dict:
    """The program_enrollment row that an `event(...)` gives, as `row()` reads it back."""
    [location] = event["userProfile"]["userLocations"]
    [user_type] = event["userProfile"]["profileUserTypes"]
    return {"program_id": event["programId"], "user_id": event["userId"], "program_name": event["programName"],
            "program_externalid": event["programExternalId"], "pii_consent_required": True,
            "user_locations": {"district_name": location["name"], "district_id": location["id"],
                               "district_code": str(location["code"])},
            "user_type": user_type["type"].lower(), "user_sub_type": user_type["subType"].upper(),
            "organisation_id": "org-1", "organisation_name": "Org One",
            "created_at": date(2023, 1, 1), "updated_at": date.fromisoformat(event["updatedAt"][:10])}


COLUMNS = ("program_id, user_id, program_name, program_externalid, pii_consent_required, user_locations, "
           "user_type, user_sub_type, organisation_id, organisation_name, created_at, updated_at")


def row(cassandra_row) -> dict:
    """A driver row of COLUMNS (and any more) as plain values comparable with `expected_row`."""
    values = cassandra_row._asdict()
    for column in ("created_at", "updated_at"):
        values[column] = values[column] and values[column].date()
    values["user_locations"] = dict(values["user_locations"] or {})
    return values


def encode(value: dict) -> bytes:
    return json.dumps(value).encode()


def bad_events(program: str) -> list[tuple[bytes | None, str, str | None]]:
    """(Kafka value, dead-letter reason, field) for each way an event can fail, writing included."""
    return [
        (b"{not json", "invalid_json", None),
        (b"\xff\xfe{}", "invalid_json", None),
        (None, "invalid_json", None),  # a tombstone
        (b"[1, 2]", "not_an_object", None),
        (encode({k: v for k, v in event(program, "x").items() if k != "programId"}), "missing_field", "programId"),
        (encode(event(program, "   ")), "missing_field", "userId"),
        (encode(event(program, 42)), "wrong_type", "userId"),
        (encode(event(program, "bad-upd", updated="yesterday")), "bad_timestamp", "updatedAt"),
        (encode(event(program, "bad-cre", createdAt="2023-02-30")), "bad_timestamp", "createdAt"),
        (encode(event(program, "bad-loc", userProfile={"userLocations": "Hyderabad"})), "wrong_type",
         "userProfile.userLocations"),
        # Valid as an event, rejected by Cassandra: a partition key over 64 KiB.
        (encode(event(program, "u" * 70_000)), "write_failed", None),
    ]


def produce(topic: str, messages: list[tuple[bytes | None, bytes | None]],
            timestamps: list[int] | None = None, partitions: list[int] | None = None) -> list[tuple[int, int]]:
    """Sends (key, value) messages in order, stamped with `timestamps` (epoch millis) if given, else now,
    to `partitions` if given, else as the key falls; returns each one's (partition, offset)."""
    coordinates = [None] * len(messages)

    def delivered(error, message, index):
        assert error is None, error
        coordinates[index] = (message.partition(), message.offset())

    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "acks": "all", "linger.ms": 20})
    for index, (key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value, timestamp=timestamps[index] if timestamps else 0,
                         on_delivery=lambda e, m, i=index: delivered(e, m, i),
                         **({"partition": partitions[index]} if partitions else {}))
        producer.poll(0)
    assert producer.flush(30) == 0
    return coordinates


def consume(topic: str, expected: int) -> list[tuple[bytes, dict]]:
    """Every (key, JSON value) of `topic`: waits for `expected` messages, then a little for any extra."""
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found, deadline = [], time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and not message.error():
                found.append((message.key(), json.loads(message.value())))
            elif len(found) >= expected:
                break
    finally:
        consumer.close()
    return found


def record_count(topic: str) -> int:
    """How many records `topic` holds; 0 when it does not exist (never produced to)."""
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": "check"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return 0
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in metadata.partitions]
        return sum(high - low for low, high in marks)
    finally:
        consumer.close()


def create_topic(topic: str, partitions: int) -> None:
    """Without time retention: tests stamp records years back, which Kafka's 7 days would let a retention
    sweep delete between the test's produce and its read."""
    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                  config={"retention.ms": "-1"})])[topic].result(30)


def _partitions(consumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)]


def committed_offsets(topic: str, group: str) -> list[int]:
    """The group's committed offset of each partition, in partition order (negative: none)."""
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": group})
    try:
        return [p.offset for p in ask_the_group(consumer.committed, _partitions(consumer, topic), timeout=10)]
    finally:
        consumer.close()


def end_offsets(topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": "check"})
    try:
        return [consumer.get_watermark_offsets(p, timeout=10)[1] for p in _partitions(consumer, topic)]
    finally:
        consumer.close()


def stored(session, keyspace: str, programs: list[str]) -> dict[tuple[str, str], tuple[dict, int]]:
    """(program, user) -> (row, write time of program_name) for every row of `programs`."""
    query = (f"SELECT {COLUMNS}, writetime(program_name) AS stamp FROM {keyspace}.program_enrollment "
             "WHERE program_id = %s")
    rows = {}
    for program in programs:
        for stored_row in session.execute(query, [program]):
            values = row(stored_row)
            rows[(program, stored_row.user_id)] = values, values.pop("stamp")
    return rows


def count_rows(session, keyspace: str, program: str) -> int:
    return session.execute(f"SELECT count(*) FROM {keyspace}.program_enrollment WHERE program_id = %s", [program],
                           timeout=60).one()[0]


STACK_RUN = settings.stack_dir() / "run"


@contextlib.contextmanager
def paused_cassandra():
    """The local stack's Cassandra stopped (SIGSTOP) for the block, always resumed (SIGCONT) after it."""
    pid = int((STACK_RUN / "cassandra.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
