"""Kafka through Beam's cross-language KafkaIO (Java), expanded by a Java expansion service."""
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


def read_from_kafka(bootstrap: str, topics: list[str], expansion_service: str, *, group_id: str | None = None,
                    max_records: int | None = None, max_read_time: int | None = None,
                    commit_offsets: bool = False, with_metadata: bool = False) -> ReadFromKafka:
    """Reads (key, value) byte pairs, or rows with topic/partition/offset when `with_metadata`.

    `max_records`/`max_read_time` (seconds) make the read bounded (backfills, tests). Offsets are
    committed by Beam when the runner finalizes the reading (`commit_offsets`), never by the Kafka
    client's auto-commit. A bounded read commits as soon as it has read, before any downstream step
    ran; an unbounded one needs a runner with stable-input support (Flink, not Prism).
    """
    config = {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest", "enable.auto.commit": "false"}
    if group_id:
        config["group.id"] = group_id
    return ReadFromKafka(consumer_config=config, topics=topics, max_num_records=max_records,
                         max_read_time=max_read_time, commit_offset_in_finalize=commit_offsets,
                         with_metadata=with_metadata, expansion_service=expansion_service)


class ReadRecords(beam.PTransform):
    """Reads `KafkaRecord`s; takes `read_from_kafka`'s arguments."""

    def __init__(self, bootstrap: str, topics: list[str], expansion_service: str, **read_options):
        super().__init__()
        self._read = read_from_kafka(bootstrap, topics, expansion_service, with_metadata=True, **read_options)

    def expand(self, pbegin):
        return (pbegin
                | "ReadFromKafka" >> self._read
                | "ToKafkaRecords" >> beam.Map(KafkaRecord.from_row))


def write_to_kafka(bootstrap: str, topic: str, expansion_service: str) -> WriteToKafka:
    """Writes (key, value) byte pairs; acks=all so a dead letter is durable once written."""
    return WriteToKafka(producer_config={"bootstrap.servers": bootstrap, "acks": "all"}, topic=topic,
                        expansion_service=expansion_service)
