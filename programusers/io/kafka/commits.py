"""Kafka: client settings for every client we make; Beam's cross-language KafkaIO (Java) for unbounded
reads; exact reads of offset ranges, acknowledged writes and offset commits in Python (confluent-kafka).

Client properties are given once, with their Java names (`security.protocol`, `sasl.mechanism`,
`sasl.jaas.config`, `ssl.truststore.*`, ...): KafkaIO takes them as they are, and the Python clients
get their librdkafka equivalents.

Delivery, the same on every runner: KafkaIO never commits (on runners other than Flink it would commit
on read). The pipeline reports each record it is done with to `CommitOffsets`, which commits per
partition the offset below which every record is done: a contiguous watermark kept in Beam state.
A bounded read plans its offset ranges first (`plan_offset_ranges`) and reads exactly those
(`ReadOffsetRanges`): KafkaIO bounded by a record count shares the count evenly among partitions and
waits out its time limit on the short ones, and it cannot stop at an end offset.
"""
from __future__ import annotations

import functools
import itertools
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import FloatCoder, TupleCoder, VarIntCoder
from apache_beam.io.kafka import ReadFromKafka
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from programusers.io.backoff import Backoff, count_wait

METRICS_NAMESPACE = "programusers.kafka"
IDLE_LIMIT_SECONDS = 60.0  # a range that gives nothing for this long below its end fails its read
FETCH_MESSAGES = 1000  # the most messages one consume() call of a range's reader returns
FOLD_OFFSETS = 100_000  # a partition's done offsets kept one by one, at most, before they are folded into runs
PROBE_SECONDS = 10.0
REPORT_EVERY_SECONDS = 60.0
COORDINATOR_WAIT_SECONDS = 60.0  # how long a group's coordinator may be busy before asking it fails
_COORDINATOR_BACKOFF = Backoff(0.1, 2.0)
_LOG = logging.getLogger(__name__)
# Time spent waiting on Kafka inside a DoFn (a Beam counter counts on a bundle's thread only, nothing
# elsewhere, e.g. where a pipeline is planned).
_GROUP_THROTTLED = Metrics.counter(METRICS_NAMESPACE, "kafka_group_throttled_ms")  # a busy coordinator
_PRODUCE_THROTTLED = Metrics.counter(METRICS_NAMESPACE, "kafka_produce_throttled_ms")  # a full producer queue

__all__ = ["CommitOffsets", "KafkaClientConfig", "KafkaRecord", "OffsetRange", "ReadOffsetRanges", "ReadRecords",
           "WriteAcknowledged", "advance", "ask_the_group", "merged", "plan_offset_ranges", "read_from_kafka",
           "read_properties", "runs_of", "share_records"]


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
                    with_metadata: bool = False) -> ReadFromKafka:
    """KafkaIO: reads (key, value) byte pairs, or rows with topic/partition/offset when `with_metadata`,
    from the group's committed offsets, else the earliest. It never commits (see CommitOffsets).

    Args:
      client: the brokers and client properties.
      topics: the topics to read.
      expansion_service: the address of the Java expansion service that runs KafkaIO.
      group_id: the consumer group whose committed offsets reading starts from; None: the earliest.
      max_records: stop after about this many records (bounded, but not exact: KafkaIO shares the count
        evenly among partitions; ReadOffsetRanges is exact).
      max_read_time: stop after this many seconds (bounded; KafkaIO waits it out on short partitions).
      with_metadata: rows with topic, partition, offset and timestamp instead of (key, value) pairs.
    """
    # read_committed, as the Python clients read: records of aborted transactions are never delivered.
    config = client.java(**{"auto.offset.reset": "earliest", "enable.auto.commit": "false",
                            "isolation.level": "read_committed"})
    if group_id:
        config["group.id"] = group_id
    return ReadFromKafka(consumer_config=config, topics=topics, max_num_records=max_records,
                         max_read_time=max_read_time, commit_offset_in_finalize=False,
                         with_metadata=with_metadata, expansion_service=expansion_service)


class ReadRecords(beam.PTransform):
    """Reads `KafkaRecord`s from `topics` with Beam's KafkaIO (unbounded unless `read_options` bound it).

    Args:
      client: the brokers and client properties.
      topics: the topics to read.
      expansion_service: the address of the Java expansion service that runs KafkaIO.
      **read_options: `read_from_kafka`'s keyword arguments (group_id, max_records, max_read_time).
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


def ask_the_group(call: Callable, *args, **kwargs):
    """`call(*args, **kwargs)`, asked again while the group's coordinator is moving or still loading,
    as it is on a broker started moments ago, for up to COORDINATOR_WAIT_SECONDS (waits of 0.1 s
    doubling to 2 s, with Backoff's jitter; counted as kafka_group_throttled_ms in a DoFn)."""
    from confluent_kafka import KafkaError, KafkaException

    busy = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE}
    deadline = time.monotonic() + COORDINATOR_WAIT_SECONDS
    for attempt in itertools.count(1):
        try:
            return call(*args, **kwargs)
        except KafkaException as error:
            pause = _COORDINATOR_BACKOFF.seconds(attempt)
            if error.args[0].code() not in busy or time.monotonic() + pause > deadline:
                raise
            _LOG.info("Kafka group coordinator busy (%s); asking again", error.args[0].name())
            time.sleep(pause)
            count_wait(_GROUP_THROTTLED, pause)


def _consumer(client: KafkaClientConfig, group_id: str, **extra):
    from confluent_kafka import Consumer

    # Positions are assigned explicitly; only CommitOffsets commits, and only what it is told.
    return Consumer({**client.python(), "group.id": group_id, "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed", **extra})


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


def _start_at(committed: int, low: int, high: int) -> int:
    """Where reading starts, as Kafka's consumers decide it: a committed offset out of the partition's
    range (none, expired, or of a topic made anew) counts for none, and reading starts at the earliest."""
    return committed if low <= committed <= high else low


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


Run = tuple[int, int]  # offsets [start, end) of one partition, all done


def advance(position: int, runs: Iterable[Run], is_gap: Callable[[int, int], bool] | None = None
            ) -> tuple[int, list[Run]]:
    """The watermark moved over the done `runs` that touch it: (new position, the runs still beyond it).
    Where a run starts past the position, `is_gap(position, run_start)` may say that no record lies
    between (offsets a compaction or a transaction marker took): the watermark then moves on. Pure."""
    pending = sorted(r for r in runs if r[1] > r[0])
    index = 0
    while index < len(pending):
        start, end = pending[index]
        if start > position and not (is_gap and is_gap(position, start)):
            break
        position, index = max(position, end), index + 1
    return position, merged(pending[index:])


def merged(runs: Iterable[Run]) -> list[Run]:
    """Runs in order, those touching or overlapping (bundles retried, split) made one. Pure."""
    joined: list[Run] = []
    for start, end in sorted(r for r in runs if r[1] > r[0]):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def runs_of(offsets: Iterable[int]) -> list[Run]:
    """Offsets as the fewest [start, end) runs. Pure."""
    runs: list[list[int]] = []
    for offset in sorted(set(offsets)):
        if runs and runs[-1][1] == offset:
            runs[-1][1] += 1
        else:
            runs.append([offset, offset + 1])
    return [(start, end) for start, end in runs]


class _RunsFn(beam.DoFn):
    """Done records -> ((topic, partition), run) per bundle: a bundle's offsets mostly run on. A partition's
    offsets are folded into runs every FOLD_OFFSETS, so a bundle of millions of records (the in-process runner
    reads a whole backfill in one) holds its runs, not its offsets."""

    def start_bundle(self):
        self._offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._runs: dict[tuple[str, int], list[Run]] = defaultdict(list)

    def process(self, record):
        key = (record.topic, record.partition)
        offsets = self._offsets[key]
        offsets.append(record.offset)
        if len(offsets) >= FOLD_OFFSETS:
            self._fold(key)

    def _fold(self, key: tuple[str, int]) -> None:
        self._runs[key] = merged([*self._runs[key], *runs_of(self._offsets.pop(key))])

    def finish_bundle(self):
        for key in list(self._offsets):
            self._fold(key)
        for key, runs in self._runs.items():
            for run in runs:
                yield GlobalWindows.windowed_value((key, run))


class _GroupOffsets:
    """What the committer asks Kafka, through one consumer of `group_id`: a plain object _CommitFn owns
    (made in setup, closed in teardown)."""

    def __init__(self, client: KafkaClientConfig, group_id: str):
        self._consumer = _consumer(client, group_id)

    def where_the_group_stands(self, topic: str, partition: int) -> int:
        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        [found] = ask_the_group(self._consumer.committed, [TopicPartition(topic, partition)], timeout=30)
        return _start_at(found.offset, low, high)

    def commit(self, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        ask_the_group(self._consumer.commit, offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)

    def is_gap(self, topic: str, partition: int, position: int, until: int) -> bool:
        """Whether the first record at or after `position` lies at `until` or later; no when Kafka cannot say."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        try:
            self._consumer.assign([TopicPartition(topic, partition, position)])
        except KafkaException:
            return False
        try:
            deadline = time.monotonic() + PROBE_SECONDS
            while time.monotonic() < deadline:
                message = self._consumer.poll(1.0)
                if message is None:
                    continue
                if not message.error() or message.error().code() == KafkaError._PARTITION_EOF:
                    return message.offset() >= until
            return False
        finally:
            self._consumer.unassign()

    def end_offset(self, topic: str, partition: int) -> int:
        from confluent_kafka import TopicPartition

        return self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]

    def close(self) -> None:
        self._consumer.close()


class _CommitFn(beam.DoFn):
    """Keyed by (topic, partition): the watermark of done records, committed to the group. Streaming, a
    processing-time timer flushes every `every` seconds and reports the lag once a minute; bounded,
    one flush at the end of the input."""
    POSITION = ReadModifyWriteStateSpec("position", VarIntCoder())
    COMMITTED = ReadModifyWriteStateSpec("committed", VarIntCoder())
    REPORTED = ReadModifyWriteStateSpec("reported", FloatCoder())
    RUNS = BagStateSpec("runs", TupleCoder((VarIntCoder(), VarIntCoder())))
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)
    FINAL = TimerSpec("final", TimeDomain.WATERMARK)

    def __init__(self, client: KafkaClientConfig, group_id: str, starts: dict[tuple[str, int], int], *,
                 every: float, streaming: bool):
        self._client, self._group_id, self._starts = client, group_id, starts
        self._every, self._streaming = every, streaming

    def setup(self):
        self._offsets = _GroupOffsets(self._client, self._group_id)
        self._commits = Metrics.counter(METRICS_NAMESPACE, "offset_commits")

    def process(self, element, runs=beam.DoFn.StateParam(RUNS), flush=beam.DoFn.TimerParam(FLUSH),
                final=beam.DoFn.TimerParam(FINAL)):
        _, run = element
        runs.add(run)
        if self._streaming:  # aligned, so that setting it again for every element does not push it back
            flush.set(Timestamp((time.time() // self._every + 1) * self._every))
        else:
            final.set(GlobalWindow().max_timestamp())

    @on_timer(FLUSH)
    def flush(self, key=beam.DoFn.KeyParam, position=beam.DoFn.StateParam(POSITION),
              committed=beam.DoFn.StateParam(COMMITTED), runs=beam.DoFn.StateParam(RUNS),
              reported=beam.DoFn.StateParam(REPORTED), flush=beam.DoFn.TimerParam(FLUSH)):
        self._flush(key, position, committed, runs, final=False)
        if time.time() - (reported.read() or 0.0) >= REPORT_EVERY_SECONDS:
            reported.write(time.time())
            self._report_lag(key, committed.read())
        flush.set(Timestamp((time.time() // self._every + 1) * self._every))  # on, to report the lag

    @on_timer(FINAL)
    def final(self, key=beam.DoFn.KeyParam, position=beam.DoFn.StateParam(POSITION),
              committed=beam.DoFn.StateParam(COMMITTED), runs=beam.DoFn.StateParam(RUNS)):
        self._flush(key, position, committed, runs, final=True)

    def _flush(self, key, position_state, committed_state, runs_state, *, final: bool):
        from confluent_kafka import KafkaException

        topic, partition = key
        before = position_state.read()
        if before is None:  # where reading started, or where the group stands now if another run moved it on
            before = max(self._starts.get(key, -1), self._offsets.where_the_group_stands(topic, partition))
        runs = list(runs_state.read())
        position, left = advance(before, runs)
        if left and (final or position == before):  # stuck: maybe on offsets that hold no record
            position, left = advance(position, left, functools.partial(self._offsets.is_gap, topic, partition))
        runs_state.clear()
        for run in left:
            runs_state.add(run)
        position_state.write(position)
        committed = committed_state.read()
        if position != committed:
            try:
                self._offsets.commit(topic, partition, position)
            except KafkaException as error:
                if final or not error.args[0].retriable():  # no later flush, or none would help
                    raise RuntimeError(f"committing {topic}[{partition}] at {position} failed: "
                                       f"{error.args[0].name()}") from None
                _LOG.warning("committing %s[%d]: %s; trying again at the next flush", topic, partition,
                             error.args[0].name())
                return
            committed = position
            self._commits.inc()
        committed_state.write(committed)

    def _report_lag(self, key, committed: int | None) -> None:
        from confluent_kafka import KafkaException

        topic, partition = key
        try:
            end = self._offsets.end_offset(topic, partition)
        except KafkaException as error:  # a report is worth no failed bundle: the next one will tell
            _LOG.warning("Kafka lag of %s[%d]: %s", topic, partition, error.args[0].name())
            return
        committed = max(committed or 0, 0)  # none yet: nothing committed
        Metrics.gauge(METRICS_NAMESPACE, f"{topic}[{partition}].records_behind").set(end - committed)
        Metrics.gauge(METRICS_NAMESPACE, f"{topic}[{partition}].committed_offset").set(committed)
        _LOG.info("Kafka lag: %s[%d] %d record(s) behind the end offset %d (committed %d)", topic, partition,
                  end - committed, end, committed)

    def teardown(self):
        self._offsets.close()


class CommitOffsets(beam.PTransform):
    """Commits to `group_id`, per partition, the offset below which every record has come in: a
    contiguous watermark, so a record still on its way holds back every later one of its partition.
    Offsets that hold no record (compacted away, transaction markers) do not hold it: Kafka is asked.

    Input: the `KafkaRecord`s (or anything with topic, partition and offset) the pipeline is done with,
    in any order: a PCollection, or a tuple of them.

    Args:
      client: the brokers and client properties.
      group_id: the consumer group to commit to.
      starts: where the reading of each (topic, partition) started (a partition not named: where the
        group stands); each is committed at the first flush.
      streaming: commit the watermark every `every` seconds and log each partition's lag once a minute
        (also gauges `<topic>[<p>].records_behind`); else once, at the end of the input.
      every: seconds between commits when streaming.
    """

    def __init__(self, client: KafkaClientConfig, group_id: str, starts: dict[tuple[str, int], int], *,
                 streaming: bool, every: float = 5.0):
        super().__init__()
        if every <= 0:
            raise ValueError("every must be positive")
        self._fn = _CommitFn(client, group_id, dict(starts), every=every, streaming=streaming)
        self._client, self._starts, self._group_id, self._every = client, dict(starts), group_id, every
        self._streaming = streaming

    def expand(self, done):
        # The runs of each input are taken where its records are made, so only a bundle's few runs go on to
        # the committer's stage, never the records (a runner's Flatten may hand every element over).
        branches = done if isinstance(done, tuple) else (done,)
        # Every planned partition gets a key, so its lag is reported even when it receives nothing.
        planned = branches[0].pipeline | "Partitions" >> beam.Create([(key, (start, start))
                                                                      for key, start in sorted(self._starts.items())])
        runs = [branch | f"AsRuns{index or ''}" >> beam.ParDo(_RunsFn()) for index, branch in enumerate(branches)]
        keyed_runs = tuple[tuple[str, int], tuple[int, int]]  # a deterministic key coder for the state
        return ((planned, *runs)
                | "Merge" >> beam.Flatten().with_output_types(keyed_runs)
                | "Commit" >> beam.ParDo(self._fn).with_input_types(keyed_runs))

    def display_data(self):
        return {"bootstrap": self._client.bootstrap, "group_id": self._group_id, "partitions": len(self._starts),
                "streaming": self._streaming, "every_seconds": self._every}
