"""`programusers doctor`: proves a runner works on this machine with a tiny join and a Kafka round trip."""
import json
import logging
import time
import uuid

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from programusers import runners, settings
from programusers.io.kafka import ReadLimit, read_from_kafka

# KafkaIO's count-bounded read asks for more without end while it has fewer records than its cap (each
# reader its share, for caps of 10,000 and more): the time limit bounds that wait, so the check ends.
READ_TIME_LIMIT_S = 120
JOIN_EXPECTED = [("u1", ["P1"], ["ACTIVE"]), ("u2", ["P1"], []), ("u3", ["P2"], ["REVOKED"]), ("u4", [], ["ACTIVE"])]

_LOG = logging.getLogger(__name__)


def join_enrollments_with_consent(pipeline):
    enrollments = pipeline | "Enrollments" >> beam.Create([("u1", "P1"), ("u2", "P1"), ("u3", "P2")])
    consents = pipeline | "Consents" >> beam.Create([("u1", "ACTIVE"), ("u3", "REVOKED"), ("u4", "ACTIVE")])
    return ({"program": enrollments, "consent": consents}
            | beam.CoGroupByKey()
            | beam.MapTuple(lambda user, g: (user, sorted(g["program"]), sorted(g["consent"]))))


def produce_numbers(client, topic: str, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(client.python())
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=json.dumps({"n": i}).encode())
    if producer.flush(30):
        raise RuntimeError(f"could not deliver test records to {topic}")


def read_numbers(pipeline, client, topic: str, count: int, expansion_service: str):
    return (pipeline
            | read_from_kafka(client, [topic], expansion_service,
                              limit=ReadLimit(records=count, seconds=READ_TIME_LIMIT_S))
            | beam.MapTuple(lambda key, value: (int(key), json.loads(value)["n"])))


def check(runner: str, pipeline_args: list[str], client, expansion_service: str) -> None:
    """`client`: a KafkaClientConfig."""
    started = time.monotonic()
    with beam.Pipeline(options=runners.pipeline_options(runner, pipeline_args)) as pipeline:
        assert_that(join_enrollments_with_consent(pipeline), equal_to(JOIN_EXPECTED))
    _LOG.info("%s: CoGroupByKey pipeline ok (%.1fs)", runner, time.monotonic() - started)

    started, topic, count = time.monotonic(), f"{settings.ENV_NAME}.programusers.doctor.{uuid.uuid4().hex[:8]}", 10
    produce_numbers(client, topic, count)
    with beam.Pipeline(options=runners.pipeline_options(runner, pipeline_args)) as pipeline:
        assert_that(read_numbers(pipeline, client, topic, count, expansion_service),
                    equal_to([(i, i) for i in range(count)]))
    _LOG.info("%s: bounded ReadFromKafka ok (%.1fs)", runner, time.monotonic() - started)
