"""Bounded reads of exact offset ranges, in Python (confluent-kafka): `plan_offset_ranges` plans each
partition's range before the pipeline, `share_records` cuts them to a record count, and `ReadOffsetRanges`
reads exactly those. KafkaIO bounded by a record count shares the count evenly among partitions and waits
out its time limit on the short ones, and it cannot stop at an end offset."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import apache_beam as beam
from apache_beam.metrics import Metrics

from programusers.io.kafka.client import METRICS_NAMESPACE, KafkaClientConfig, _consumer, _start_at, ask_the_group
from programusers.io.kafka.kafkaio import KafkaRecord

IDLE_LIMIT_SECONDS = 60.0  # a range that gives nothing for this long below its end fails its read
FETCH_MESSAGES = 1000  # the most messages one consume() call of a range's reader returns
_LOG = logging.getLogger(__name__)

__all__ = ["OffsetRange", "ReadOffsetRanges", "plan_offset_ranges", "share_records"]


@dataclass(frozen=True)
class OffsetRange:
    """Offsets [start, end) of one partition."""
    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def share_records(ranges: Sequence[OffsetRange], total: int) -> list[OffsetRange]:
    """`ranges` cut to `total` records in all, shared as evenly as the ranges allow (a short one keeps
    all it has, the others share the rest), each cut at its end so that it still starts where it did."""
    kept, left = {}, total
    by_size = sorted(ranges, key=lambda r: r.size)
    for index, span in enumerate(by_size):
        sharing = len(by_size) - index
        take = min(span.size, -(-left // sharing))  # the ceiling of an even share of what is left
        kept[span], left = take, left - take
    return [OffsetRange(r.topic, r.partition, r.start, r.start + kept[r]) for r in ranges]


def plan_offset_ranges(client: KafkaClientConfig, topic: str, *, group_id: str | None = None,
                       start_time: datetime | None = None, stop_time: datetime | None = None,
                       max_records: int | None = None) -> list[OffsetRange]:
    """Every partition's range, in partition order: from the first offset at or after `start_time`, else
    the group's committed offset, else the earliest; to the first offset at or after `stop_time`, else
    the end offset now. `max_records` cuts them to that many records in all (`share_records`)."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(client, group_id or "programusers.planner")
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ValueError(f"Kafka topic {topic} not found at {client.bootstrap}")
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        bounds = [consumer.get_watermark_offsets(tp, timeout=30) for tp in partitions]

        def at(moment: datetime, otherwise: list[int]) -> list[int]:
            millis = int(moment.timestamp() * 1000)
            found = consumer.offsets_for_times([TopicPartition(topic, tp.partition, millis) for tp in partitions],
                                               timeout=30)
            for answer in found:
                if answer.error is not None:
                    raise ValueError(f"Kafka could not find offsets by time for {topic}[{answer.partition}]: "
                                     f"{answer.error.name()}")
            return [f.offset if f.offset >= 0 else other for f, other in zip(found, otherwise)]  # -1: none so late

        ends = at(stop_time, [high for _, high in bounds]) if stop_time else [high for _, high in bounds]
        if start_time:
            starts = at(start_time, ends)
        elif group_id:
            starts = [c.offset for c in ask_the_group(consumer.committed, partitions, timeout=30)]
        else:
            starts = [-1] * len(partitions)
        ranges = [OffsetRange(topic, tp.partition, min(_start_at(start, low, high), end), end)
                  for tp, start, (low, high), end in zip(partitions, starts, bounds, ends)]
        return ranges if max_records is None else share_records(ranges, max_records)
    finally:
        consumer.close()


def _split(ranges: Iterable[OffsetRange], most: int) -> list[OffsetRange]:
    return [OffsetRange(r.topic, r.partition, start, min(start + most, r.end))
            for r in ranges for start in range(r.start, r.end, most)]


class _ReadRangeFn(beam.DoFn):
    """Reads exactly one OffsetRange, until `deadline` (epoch seconds) at the latest; fails when Kafka
    gives nothing for IDLE_LIMIT_SECONDS below the range's end."""

    def __init__(self, client: KafkaClientConfig, deadline: float | None):
        self._client, self._deadline = client, deadline

    def setup(self):
        # Offsets that expired after planning fail the read instead of being skipped.
        self._consumer = _consumer(self._client, "programusers.reader", **{"auto.offset.reset": "error"})
        self._unfinished = Metrics.counter(METRICS_NAMESPACE, "ranges_unfinished")

    def process(self, span: OffsetRange):
        from confluent_kafka import KafkaError, TopicPartition

        self._consumer.assign([TopicPartition(span.topic, span.partition, span.start)])
        try:
            position, idle_since = span.start, time.monotonic()
            while position < span.end and (self._deadline is None or time.time() < self._deadline):
                # Many messages a call (a call per message cost more than the rest of the read), but no more
                # than the range still holds: consume() waits out its timeout for a count it cannot reach.
                for message in self._consumer.consume(min(FETCH_MESSAGES, span.end - position), 1.0):
                    if not message.error():
                        idle_since, position = time.monotonic(), message.offset() + 1
                        if message.offset() < span.end:
                            yield KafkaRecord(span.topic, span.partition, message.offset(), message.timestamp()[1],
                                              message.key(), message.value())
                    elif message.error().code() == KafkaError._PARTITION_EOF:
                        position = max(position, message.offset())  # what follows is no record (e.g. a marker)
                    elif message.error().code() == KafkaError._AUTO_OFFSET_RESET:
                        raise RuntimeError(f"offsets of {span.topic}[{span.partition}] from {position} are gone "
                                           f"from Kafka (retention) before they were read; range end {span.end}")
                    else:
                        _LOG.warning("reading %s[%d]: %s", span.topic, span.partition, message.error().name())
                if position < span.end and time.monotonic() - idle_since > IDLE_LIMIT_SECONDS:
                    raise RuntimeError(f"Kafka gave no record of {span.topic}[{span.partition}] for "
                                       f"{IDLE_LIMIT_SECONDS:.0f} s at offset {position} (range end {span.end})")
            if position < span.end:  # the deadline came first
                self._unfinished.inc()
        finally:
            self._consumer.unassign()

    def teardown(self):
        self._consumer.close()


class ReadOffsetRanges(beam.PTransform):
    """Reads exactly the `KafkaRecord`s of `ranges` (see `plan_offset_ranges`), in pieces spread over the
    workers, with the Python client (read_committed). A piece fails when Kafka gives nothing for
    IDLE_LIMIT_SECONDS below its end, or when its offsets are gone (retention).

    Args:
      client: the brokers and client properties.
      ranges: the offset ranges to read.
      deadline: when to stop reading (epoch seconds), wherever the ranges are; the records read so far go
        on as usual, and counter `ranges_unfinished` counts the pieces cut short. None: read them all.
      split: the most records in one piece.
    """

    def __init__(self, client: KafkaClientConfig, ranges: Sequence[OffsetRange], *, deadline: float | None = None,
                 split: int = 50_000):
        super().__init__()
        self._client, self._ranges, self._deadline, self._split = client, list(ranges), deadline, split

    def expand(self, pbegin):
        return (pbegin
                | "Ranges" >> beam.Create(_split(self._ranges, self._split))
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRanges" >> beam.ParDo(_ReadRangeFn(self._client, self._deadline)))

    def display_data(self):
        return {"bootstrap": self._client.bootstrap, "records": sum(r.size for r in self._ranges),
                "partitions": len(self._ranges), "deadline": str(self._deadline), "split": self._split}
