"""Acknowledged writes, in Python (confluent-kafka): `WriteAcknowledged` produces with acks=all and
idempotence and passes each record's context on once Kafka has acknowledged it."""
from __future__ import annotations

import functools
import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from programusers.io.backoff import count_wait
from programusers.io.kafka.client import METRICS_NAMESPACE, REPORT_EVERY_SECONDS, KafkaClientConfig

_LOG = logging.getLogger(__name__)
# Time spent waiting on a full producer queue inside a DoFn.
_PRODUCE_THROTTLED = Metrics.counter(METRICS_NAMESPACE, "kafka_produce_throttled_ms")

__all__ = ["WriteAcknowledged"]


class _WriteAcknowledgedFn(beam.DoFn):
    """Produces (context, key, value) triples with acks=all and idempotence; outputs each context once
    Kafka has acknowledged its record. While Kafka is away the bundle waits: librdkafka retries (with
    its own backoff) without a time limit (message.timeout.ms 0), and the outage is logged about once a
    minute; past `max_outage` seconds (bounded runs) the bundle fails instead."""

    def __init__(self, client: KafkaClientConfig, topic: str, max_outage: float | None):
        self._client, self._topic, self._max_outage = client, topic, max_outage

    def setup(self):
        from confluent_kafka import Producer

        self._producer = Producer(self._client.python(**{"acks": "all", "enable.idempotence": True,
                                                         "message.timeout.ms": 0, "linger.ms": 5}))

    def start_bundle(self):
        self._acknowledged, self._refused = [], []

    def _delivered(self, windowed, error, message):
        (self._refused if error else self._acknowledged).append(error or windowed)

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        context, key, value = element
        on_delivery = functools.partial(self._delivered, windowed.with_value(context))
        while True:
            try:
                self._producer.produce(self._topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: wait for acknowledgements
                started = time.monotonic()
                self._producer.poll(0.5)
                count_wait(_PRODUCE_THROTTLED, time.monotonic() - started)
        self._producer.poll(0)
        yield from self._settled()

    def finish_bundle(self):
        started = time.monotonic()
        while (pending := self._producer.flush(REPORT_EVERY_SECONDS)) > 0:
            waited = time.monotonic() - started
            if self._max_outage is not None and waited > self._max_outage:
                raise RuntimeError(f"Kafka has not acknowledged {pending} record(s) for {self._topic} for "
                                   f"{waited:.0f} s, more than the run's outage limit of {self._max_outage:g} s; "
                                   "nothing is committed past them: re-run once it answers")
            _LOG.warning("Kafka has not acknowledged %d record(s) for %s for %.0f s; waiting", pending,
                         self._topic, waited)
        yield from self._settled()

    def _settled(self):
        if self._refused:  # the record itself was refused (e.g. too large): no retry can help
            raise RuntimeError(f"Kafka refused a record for {self._topic}: {self._refused[0].name()}")
        settled, self._acknowledged = self._acknowledged, []
        return settled

    def teardown(self):
        self._producer.flush(10)


class WriteAcknowledged(beam.PTransform):
    """Writes (context, key, value) triples to `topic`; returns each context once Kafka acknowledged its
    record (acks=all, idempotent), so that a caller may count the record as delivered. A bundle waits for
    Kafka for as long as it takes, or fails after `max_outage` seconds; a record Kafka refuses (e.g. too
    large) fails it. Counter `kafka_produce_throttled_ms`: time spent waiting on a full producer queue.

    Args:
      client: the brokers and client properties.
      topic: the topic to write.
      max_outage: seconds a bundle waits for Kafka's acknowledgements before it fails; None: for ever.
    """

    def __init__(self, client: KafkaClientConfig, topic: str, *, max_outage: float | None = None):
        super().__init__()
        self._client, self._topic, self._max_outage = client, topic, max_outage

    def expand(self, records):
        return records | "Produce" >> beam.ParDo(_WriteAcknowledgedFn(self._client, self._topic, self._max_outage))

    def display_data(self):
        return {"bootstrap": self._client.bootstrap, "topic": self._topic, "max_outage": str(self._max_outage)}
