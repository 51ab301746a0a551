"""Beam's cross-language KafkaIO (Java), for unbounded reads: `read_from_kafka`, `ReadRecords`, and the
`KafkaRecord`s they give (as `ReadOffsetRanges` does too). KafkaIO never commits here (on runners other than
Flink it would commit on read): see `CommitOffsets`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka

from programusers.io.kafka.client import KafkaClientConfig

__all__ = ["KafkaRecord", "ReadLimit", "ReadRecords", "read_from_kafka"]


class KafkaRecord(NamedTuple):
    """A consumed record: where it came from and its raw bytes (KafkaIO's metadata row, without headers)."""
    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch millis as Kafka gave it; negative when the producer set none
    key: bytes | None
    value: bytes | None

    @classmethod
    def from_row(cls, row) -> KafkaRecord:
        return cls(row.topic, row.partition, row.offset, row.timestamp, row.key, row.value)


@dataclass(frozen=True)
class ReadLimit:
    """Where a bounded KafkaIO read stops: after about `records` records (not exact: KafkaIO shares the count
    evenly among partitions; ReadOffsetRanges is exact), or `seconds` after it starts (KafkaIO waits it out
    on short partitions), whichever comes first; None: no such limit."""
    records: int | None = None
    seconds: int | None = None


def read_from_kafka(client: KafkaClientConfig, topics: list[str], expansion_service: str, *,
                    group_id: str | None = None, limit: ReadLimit = ReadLimit(),
                    with_metadata: bool = False) -> ReadFromKafka:
    """KafkaIO: reads (key, value) byte pairs, or rows with topic/partition/offset when `with_metadata`,
    from the group's committed offsets, else the earliest. It never commits (see CommitOffsets).

    Args:
      client: the brokers and client properties.
      topics: the topics to read.
      expansion_service: the address of the Java expansion service that runs KafkaIO.
      group_id: the consumer group whose committed offsets reading starts from; None: the earliest.
      limit: where a bounded read stops (see ReadLimit); the default reads for ever.
      with_metadata: rows with topic, partition, offset and timestamp instead of (key, value) pairs.
    """
    # read_committed, as the Python clients read: records of aborted transactions are never delivered.
    config = client.java(**{"auto.offset.reset": "earliest", "enable.auto.commit": "false",
                            "isolation.level": "read_committed"})
    if group_id:
        config["group.id"] = group_id
    return ReadFromKafka(consumer_config=config, topics=topics, max_num_records=limit.records,
                         max_read_time=limit.seconds, commit_offset_in_finalize=False,
                         with_metadata=with_metadata, expansion_service=expansion_service)


class ReadRecords(beam.PTransform):
    """Reads `KafkaRecord`s from `topics` with Beam's KafkaIO (unbounded unless `read_options` bound it).

    Args:
      client: the brokers and client properties.
      topics: the topics to read.
      expansion_service: the address of the Java expansion service that runs KafkaIO.
      **read_options: `read_from_kafka`'s keyword arguments (group_id, limit).
    """

    def __init__(self, client: KafkaClientConfig, topics: list[str], expansion_service: str, **read_options):
        super().__init__()
        self._read = read_from_kafka(client, topics, expansion_service, with_metadata=True, **read_options)
        self._display = {"bootstrap": client.bootstrap, "topics": ",".join(topics),
                         "expansion_service": expansion_service,
                         **{name: value for name, value in read_options.items() if value is not None}}

    def display_data(self):
        return self._display

    def expand(self, pbegin):
        return (pbegin
                | "ReadFromKafka" >> self._read
                | "ToKafkaRecords" >> beam.Map(KafkaRecord.from_row))
