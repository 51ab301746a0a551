"""Kafka: client settings for every client we make, and Beam's cross-language KafkaIO (Java), expanded
by a Java expansion service.

Client properties are given once, with their Java names (`security.protocol`, `sasl.mechanism`,
`sasl.jaas.config`, `ssl.truststore.*`, ...): KafkaIO takes them as they are, and the Python clients
(confluent-kafka: `generate`, `replay`, the demo) get their librdkafka equivalents.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka


class KafkaRecord(NamedTuple):
    """A consumed record: where it came from and its raw bytes (KafkaIO's metadata row, without headers)."""
    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch millis as Kafka gave it; negative when the producer set none
    key: bytes | None
    value: bytes | None

    @classmethod
    def from_row(cls, row) -> "KafkaRecord":
        return cls(row.topic, row.partition, row.offset, row.timestamp, row.key, row.value)


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


def read_from_kafka(client: KafkaClientConfig, topics: list[str], expansion_service: str, *,
                    group_id: str | None = None,
                    max_records: int | None = None, max_read_time: int | None = None,
                    commit_offsets: bool = False, with_metadata: bool = False) -> ReadFromKafka:
    """Reads (key, value) byte pairs, or rows with topic/partition/offset when `with_metadata`.

    `max_records`/`max_read_time` (seconds) make the read bounded (backfills, tests). Offsets are
    committed by Beam when the runner finalizes the reading (`commit_offsets`), never by the Kafka
    client's auto-commit. A bounded read commits as soon as it has read, before any downstream step
    ran; an unbounded one needs a runner with stable-input support (Flink, not Prism).
    """
    config = client.java(**{"auto.offset.reset": "earliest", "enable.auto.commit": "false"})
    if group_id:
        config["group.id"] = group_id
    return ReadFromKafka(consumer_config=config, topics=topics, max_num_records=max_records,
                         max_read_time=max_read_time, commit_offset_in_finalize=commit_offsets,
                         with_metadata=with_metadata, expansion_service=expansion_service)


class ReadRecords(beam.PTransform):
    """Reads `KafkaRecord`s; takes `read_from_kafka`'s arguments."""

    def __init__(self, client: KafkaClientConfig, topics: list[str], expansion_service: str, **read_options):
        super().__init__()
        self._read = read_from_kafka(client, topics, expansion_service, with_metadata=True, **read_options)

    def expand(self, pbegin):
        return (pbegin
                | "ReadFromKafka" >> self._read
                | "ToKafkaRecords" >> beam.Map(KafkaRecord.from_row))


def write_to_kafka(client: KafkaClientConfig, topic: str, expansion_service: str) -> WriteToKafka:
    """Writes (key, value) byte pairs; acks=all so a dead letter is durable once written."""
    return WriteToKafka(producer_config=client.java(acks="all"), topic=topic, expansion_service=expansion_service)
