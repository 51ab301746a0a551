"""The local stack is real: each service answers and round-trips data; init is idempotent."""
import subprocess
import sys
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from programusers import settings
from programusers.io import postgres

pytestmark = pytest.mark.services


def test_cassandra_write_then_read(cassandra_session, test_schema, unique):
    ks = test_schema["programs_keyspace"]
    insert = cassandra_session.prepare(
        f"INSERT INTO {ks}.program_enrollment (program_id, user_id, user_locations, created_at) VALUES (?, ?, ?, ?)")
    cassandra_session.execute(insert, (f"p-{unique}", "u1", {"district_name": "ANANTAPUR"}, "2023-01-12"))
    row = cassandra_session.execute(
        f"SELECT user_locations, created_at FROM {ks}.program_enrollment WHERE program_id = %s", (f"p-{unique}",)).one()
    assert row.user_locations == {"district_name": "ANANTAPUR"}
    assert str(row.created_at) == "2023-01-12"


def test_kafka_produce_then_consume(stack, unique):
    topic = f"test.stack.{unique}"
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP})
    sent = [f"event-{i}".encode() for i in range(5)]
    for value in sent:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": f"g-{unique}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received, deadline = [], time.monotonic() + 60
    while len(received) < len(sent) and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            received.append(message.value())
    consumer.close()
    assert sorted(received) == sorted(sent)
    AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP}).delete_topics([topic])


def test_redis_hash_round_trip(stack, unique):
    client = redis.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=3, decode_responses=True)
    key = f"user:test-{unique}"
    client.hset(key, mapping={"userid": "u1", "firstname": "Asha"})
    try:
        assert client.hgetall(key) == {"userid": "u1", "firstname": "Asha"}
    finally:
        client.delete(key)


def test_postgres_round_trip(test_schema, pg_dsn):
    request_id = uuid.uuid4().hex
    connection = postgres.connect(pg_dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {test_schema['job_request_table']} (tag, request_id, job_id, status, "
                           "request_data, download_urls) VALUES (%s, %s, %s, %s, %s, %s)",
                           ("t", request_id, "program-user-exhaust", "SUBMITTED", '{"filters": []}', ["a.csv"]))
            cursor.execute(f"SELECT status, request_data, download_urls FROM {test_schema['job_request_table']} "
                           "WHERE request_id = %s", (request_id,))
            assert cursor.fetchone() == ("SUBMITTED", {"filters": []}, ["a.csv"])
    finally:
        connection.close()


def test_init_twice_is_harmless_and_keeps_data(cassandra_session, test_schema, unique):
    ks = test_schema["programs_keyspace"]
    cassandra_session.execute(f"INSERT INTO {ks}.program_enrollment (program_id, user_id) VALUES (%s, 'u1')",
                              (f"keep-{unique}",))
    args = ["--programs-keyspace", ks, "--consent-keyspace", test_schema["consent_keyspace"],
            "--job-request-table", test_schema["job_request_table"]]
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "programusers", "init", *args], check=True)
    assert cassandra_session.execute(
        f"SELECT user_id FROM {ks}.program_enrollment WHERE program_id = %s", (f"keep-{unique}",)).one().user_id == "u1"
