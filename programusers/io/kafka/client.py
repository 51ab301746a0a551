"""Kafka client settings and what every Python client of this package shares.

Client properties are given once, with their Java names (`security.protocol`, `sasl.mechanism`,
`sasl.jaas.config`, `ssl.truststore.*`, ...): KafkaIO takes them as they are (`KafkaClientConfig.java`), and
the Python clients (confluent-kafka, librdkafka) get their equivalents (`KafkaClientConfig.python`).
Here too: the consumer every Python reader and committer starts from, where it starts reading, asking a
busy group coordinator again (`ask_the_group`), and the metrics namespace of the package.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apache_beam.metrics import Metrics

from programusers.io.backoff import Backoff, count_wait, retry

METRICS_NAMESPACE = "programusers.kafka"  # the counters and gauges of every module of the package
REPORT_EVERY_SECONDS = 60.0  # how often a wait on Kafka is logged or a partition's lag reported
COORDINATOR_WAIT_SECONDS = 60.0  # how long a group's coordinator may be busy before asking it fails
_COORDINATOR_BACKOFF = Backoff(0.1, 2.0)
_LOG = logging.getLogger(__name__)
# Time spent waiting on a busy coordinator inside a DoFn (a Beam counter counts on a bundle's thread only,
# nothing elsewhere, e.g. where a pipeline is planned).
_GROUP_THROTTLED = Metrics.counter(METRICS_NAMESPACE, "kafka_group_throttled_ms")

__all__ = ["KafkaClientConfig", "ask_the_group", "read_properties"]


_PROPERTY = re.compile(r"(?P<key>[^=:\s]+)\s*[=:]?\s*(?P<value>.*)")


def read_properties(path: str) -> dict[str, str]:
    """A Java properties file's `key=value` (or `key: value`) lines; # and ! start comments."""
    found, pending = {}, ""
    for raw in Path(path).read_text("utf-8").splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):  # continued on the next line
            pending = line[:-1]
            continue
        pending = ""
        if not line or line[0] in "#!":
            continue
        entry = _PROPERTY.match(line)
        found[entry["key"]] = entry["value"]
    return found


_JAAS_LOGIN = re.compile(r'username="(?P<username>[^"]*)"\s+password="(?P<password>[^"]*)"')


@dataclass(frozen=True)
class KafkaClientConfig:
    """Bootstrap servers plus client properties from an optional properties file (which may hold SASL
    secrets: it is read where a client is made, so a pickled config holds only its path) and `overrides`
    ("KEY=VALUE" texts, as given to --kafka-config)."""
    bootstrap: str = "127.0.0.1:9092"
    properties_file: str | None = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def load(cls, bootstrap: str, properties_file: str | None = None, overrides=()) -> KafkaClientConfig:
        for number, text in enumerate(overrides, 1):
            if "=" not in text:  # the text itself is not shown: it may be a secret given the wrong way
                raise ValueError(f"--kafka-config number {number}: expected KEY=VALUE")
        config = cls(bootstrap, properties_file, tuple(overrides))
        config.properties()  # a missing or unreadable file fails now, not in a worker
        return config

    def properties(self) -> dict[str, str]:
        found = read_properties(self.properties_file) if self.properties_file else {}
        found.update(text.split("=", 1) for text in self.overrides)
        return found

    def java(self, **extra: str) -> dict[str, str]:
        """For KafkaIO (Java clients): the properties as given."""
        return {"bootstrap.servers": self.bootstrap, **self.properties(), **extra}

    def python(self, **extra) -> dict:
        """For confluent-kafka (librdkafka): SASL PLAIN/SCRAM logins from sasl.jaas.config, a PEM trust
        store as ssl.ca.location; other properties as they are (librdkafka shares most names and names
        any it does not know)."""
        properties = self.properties()
        config = {"bootstrap.servers": self.bootstrap}
        for key, value in properties.items():
            if key == "sasl.jaas.config":
                login = _JAAS_LOGIN.search(value)
                if not login:
                    raise ValueError("sasl.jaas.config: only a username/password login (PLAIN, SCRAM) is "
                                     "understood by the Python clients")
                config.update({"sasl.username": login["username"], "sasl.password": login["password"]})
            elif key == "ssl.truststore.type":
                if value.upper() != "PEM":
                    raise ValueError("ssl.truststore.type: the Python clients read a PEM CA file; use "
                                     "ssl.truststore.type=PEM")
            elif key == "ssl.truststore.location":
                config["ssl.ca.location"] = value
            elif key == "ssl.endpoint.identification.algorithm":
                config[key] = value or "none"
            else:
                config[key] = value
        return {**config, **extra}

    def describe(self) -> str:
        """For logs: where and how (protocol, mechanism), never a secret."""
        properties = self.properties()
        protocol = properties.get("security.protocol", "PLAINTEXT")
        mechanism = properties.get("sasl.mechanism")
        return f"{self.bootstrap} ({protocol}{'/' + mechanism if mechanism else ''})"


def ask_the_group(call: Callable, *args, **kwargs):
    """`call(*args, **kwargs)`, asked again while the group's coordinator is moving or still loading,
    as it is on a broker started moments ago, for up to COORDINATOR_WAIT_SECONDS (waits of 0.1 s
    doubling to 2 s, with Backoff's jitter; counted as kafka_group_throttled_ms in a DoFn)."""
    from confluent_kafka import KafkaError, KafkaException

    busy = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE}

    def waiting(error: KafkaException, seconds: float) -> None:
        _LOG.info("Kafka group coordinator busy (%s); asking again", error.args[0].name())
        count_wait(_GROUP_THROTTLED, seconds)

    return retry(functools.partial(call, *args, **kwargs), _COORDINATOR_BACKOFF,
                 lambda error: isinstance(error, KafkaException) and error.args[0].code() in busy,
                 limit=COORDINATOR_WAIT_SECONDS, on_wait=waiting)


def _consumer(client: KafkaClientConfig, group_id: str, **extra):
    from confluent_kafka import Consumer

    # Positions are assigned explicitly; only CommitOffsets commits, and only what it is told.
    return Consumer({**client.python(), "group.id": group_id, "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed", **extra})


def _start_at(committed: int, low: int, high: int) -> int:
    """Where reading starts, as Kafka's consumers decide it: a committed offset out of the partition's
    range (none, expired, or of a topic made anew) counts for none, and reading starts at the earliest."""
    return committed if low <= committed <= high else low
