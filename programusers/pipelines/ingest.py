"""`programusers ingest`: program-user events from Kafka into Cassandra's program_enrollment (SPEC §2).

    ReadEvents -> ParseEvents -+-> WriteEnrollments -+-> written ---------------------------------+-> CommitOffsets
                               |                     +-> rejected writes -+                       |
                               +-> rejected events ----------------------+-> WriteDeadLetters ---+
                                                                              (acknowledged)

Streaming by default (KafkaIO, until stopped); a backfill (--backfill, --until, --from, --max-records or
--max-read-time) reads planned offset ranges exactly and ends when they are read.

Delivery, the same on every runner. Every write is idempotent (stamped USING TIMESTAMP from the event),
so reading a record twice is harmless and only losing one is not. A record is done once its row is
written (the sink retries transient failures until they succeed) or its dead letter is acknowledged by
Kafka (acks=all). CommitOffsets commits per partition the offset below which every record is done
(a contiguous watermark in Beam state), every --commit-every seconds while streaming and once at the end
of a backfill. KafkaIO itself never commits. A job started again, on any runner, reads from the
committed offsets: it re-reads what was done since the last commit (the watermark trails by about a
bundle), and what was in flight. See README, "Delivery".
"""
from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult
from cassandra import ConsistencyLevel

from programusers import events, settings
from programusers.io import cassandra_sink, kafka
from programusers.io.cassandra_sink import WritePolicy
from programusers.io.kafka import KafkaRecord, OffsetRange
from programusers.options import StoreOptions, in_range, keyspace_flags
from programusers.transforms.enrollments import WriteEnrollments

METRICS_NAMESPACE = "programusers.ingest"
INVALID = "invalid"  # the output of events that fail validation (SPEC §2): bound for the dead letters
DEFAULT_BOUNDED_OUTAGE = 600.0  # seconds: a bounded run (a backfill) fails rather than wait for ever
_LOG = logging.getLogger(__name__)


def iso_time(text: str) -> datetime:
    """An ISO-8601 date or time from the command line; without an offset, UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_time_text(text: str) -> str:
    """A flag's ISO-8601 text, checked by the parser (argparse's error, exit 2) and kept as text, so that
    the options stay serializable for portable runners."""
    try:
        iso_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 date or time") from None
    return text


class DeadLetterOptions(PipelineOptions):
    """Where the ingest writes its dead letters and the replay reads them."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--dead-letter-topic", default=f"{settings.ENV_NAME}.ml.programUsers.failed")


class CassandraWriteOptions(PipelineOptions):
    """How program_enrollment rows are written: by the ingest and by the replay of dead letters."""

    @classmethod
    def _add_argparse_args(cls, parser):
        keyspace_flags(parser, consent=False)
        parser.add_argument("--consistency", default="LOCAL_QUORUM",
                            choices=[name for name in ConsistencyLevel.name_to_value if "SERIAL" not in name])
        parser.add_argument("--write-concurrency", type=in_range(1), default=32,
                            help="Cassandra writes in flight per worker thread")
        parser.add_argument("--write-batch-bytes", type=in_range(0), default=cassandra_sink.MAX_BATCH_BYTES,
                            help="a program's mutations go to Cassandra as UNLOGGED batches of at most this many "
                                 "bytes of values, each one partition's: one mutation, which Cassandra applies at "
                                 "once and does not hold to batch_size_warn_threshold (that counts batches across "
                                 "partitions); 0: one statement a request")
        parser.add_argument("--retry-backoff", type=in_range(0, cassandra_sink.MAX_BACKOFF_SECONDS, float),
                            default=cassandra_sink.DEFAULT_BACKOFF_SECONDS,
                            help="seconds before a transiently failed write is tried again; doubled for each "
                                 f"next try, at most {cassandra_sink.MAX_BACKOFF_SECONDS:g} s. Transient failures "
                                 "are retried until they succeed, never dead-lettered")
        parser.add_argument("--max-write-outage", type=in_range(0, kind=float), metavar="SECONDS",
                            help="fail the run when no Cassandra write has succeeded for this long (0: never); "
                                 f"default {DEFAULT_BOUNDED_OUTAGE:g} for bounded runs, never for streaming ones, "
                                 "which hold the stream and log once a minute while Cassandra is unreachable")

    def outage_limit(self, bounded: bool) -> float | None:
        """Seconds without a successful write before the run fails; None: wait for ever."""
        if self.max_write_outage is None:
            return DEFAULT_BOUNDED_OUTAGE if bounded else None
        return self.max_write_outage or None

    def write_enrollments(self, bounded: bool) -> WriteEnrollments:
        return WriteEnrollments(self.view_as(StoreOptions).cassandra_connection(), self.programs_keyspace,
                                WritePolicy(consistency=self.consistency, concurrency=self.write_concurrency,
                                            backoff=self.retry_backoff, max_outage=self.outage_limit(bounded),
                                            max_batch_bytes=self.write_batch_bytes))


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input-topic", default=f"{settings.ENV_NAME}.ml.programUsers.raw")
        parser.add_argument("--consumer-group", default=f"{settings.ENV_NAME}.programusers.ingest")
        parser.add_argument("--commit-offsets", action=argparse.BooleanOptionalAction, default=True,
                            help="commit to the consumer group, per partition, the offset below which every "
                                 "record is written or dead-lettered (on every runner)")
        parser.add_argument("--commit-every", type=in_range(0.1, kind=float), default=5.0, metavar="SECONDS",
                            help="how often a streaming run commits its watermark (a restart re-reads what "
                                 "was done since)")
        parser.add_argument("--expansion-service", default=settings.EXPANSION_SERVICE,
                            help="Beam Java expansion service for KafkaIO, host:port")
        parser.add_argument("--backfill", action="store_true",
                            help="read each partition from the group's committed offset (else the earliest) up "
                                 "to its end offset now, then stop")
        parser.add_argument("--from", dest="read_from", type=iso_time_text, metavar="ISO_TIME",
                            help="a backfill starting at the first record at or after this time (UTC unless "
                                 "it says otherwise) instead of the committed offsets; commits nothing")
        parser.add_argument("--until", dest="read_until", type=iso_time_text, metavar="ISO_TIME",
                            help="a backfill ending before the first record at or after this time; commits "
                                 "nothing")
        parser.add_argument("--max-records", type=in_range(1),
                            help="a backfill of at most this many records in all, shared among the partitions")
        parser.add_argument("--max-read-time", type=in_range(1), metavar="SECONDS",
                            help="a backfill that stops reading this long after it starts; a run stopped "
                                 "before its ranges are read exits non-zero")

    @property
    def bounded(self) -> bool:
        return bool(self.backfill or self.read_from or self.read_until or self.max_records is not None
                    or self.max_read_time is not None)

    @property
    def write_outage_limit(self) -> float | None:
        return self.view_as(CassandraWriteOptions).outage_limit(self.bounded)

    @property
    def commits(self) -> bool:
        """A backfill of a time window (--from, --until) re-reads history: it leaves the group's offsets
        where they are, which committing its ranges would move past records it never read."""
        return self.commit_offsets and not (self.read_from or self.read_until)


def arrival_micros(kafka_timestamp_millis: int) -> int:
    """An event's fallback write time: its Kafka timestamp, which a replay sees again, else now."""
    return kafka_timestamp_millis * 1000 if kafka_timestamp_millis >= 0 else time.time_ns() // 1000


def dead_letter_message(record: KafkaRecord, dead: events.DeadLetter, failed_at: datetime) -> tuple[bytes, bytes]:
    """The dead-letter topic's (key, value): the record's own key, else its coordinates, and SPEC's JSON."""
    key = record.key if record.key is not None else f"{record.topic}/{record.partition}/{record.offset}".encode()
    origin = events.RecordOrigin(record.topic, record.partition, record.offset, record.timestamp)
    return key, events.dead_letter_value(dead, record.value, origin, failed_at)


class _ParseFn(beam.DoFn):
    """KafkaRecord -> (record, mutation), or (record, DeadLetter) on the INVALID output."""

    def __init__(self):
        self._read = Metrics.counter(METRICS_NAMESPACE, "events_read")

    def process(self, record: KafkaRecord):
        self._read.inc()
        result = events.parse_event(record.value, arrival_micros(record.timestamp))
        if isinstance(result, events.DeadLetter):
            yield pvalue.TaggedOutput(INVALID, (record, result))
        else:
            yield record, result


def _format_dead_letter(element) -> tuple:
    """(record, DeadLetter) -> ((record, reason), key, value) of the dead-letter topic."""
    record, dead = element
    return ((record, dead.reason), *dead_letter_message(record, dead, datetime.now(UTC)))


def _count_dead_lettered(acknowledged: tuple) -> KafkaRecord:
    """A dead letter Kafka acknowledged -> its record, counted by reason only then."""
    record, reason = acknowledged
    Metrics.counter(METRICS_NAMESPACE, f"dead_lettered_{reason}").inc()
    return record


class IngestEvents(beam.PTransform):
    """KafkaRecords -> enrollment rows written by `write_enrollments` (see WriteEnrollments), dead letters
    of bad events and rejected writes written by `write_dead_letters` (see kafka.WriteAcknowledged).
    Returns every record that is done, as two PCollections: those whose row is written, those whose dead
    letter is acknowledged (not flattened here: a runner's Flatten may hand every record over to another
    stage, and kafka.CommitOffsets takes both)."""

    def __init__(self, write_enrollments: beam.PTransform, write_dead_letters: beam.PTransform):
        super().__init__()
        self._write_enrollments, self._write_dead_letters = write_enrollments, write_dead_letters

    def expand(self, records):
        parsed = records | "ParseEvents" >> beam.ParDo(_ParseFn()).with_outputs(INVALID, main="mutations")
        written, failed = parsed.mutations | "WriteEnrollments" >> self._write_enrollments
        dead_lettered = ((parsed[INVALID], failed)
                         | "MergeDeadLetters" >> beam.Flatten()
                         | "FormatDeadLetters" >> beam.Map(_format_dead_letter)
                         | "WriteDeadLetters" >> self._write_dead_letters
                         | "CountDeadLettered" >> beam.Map(_count_dead_lettered))
        return written, dead_lettered


def plan(options: PipelineOptions) -> list[OffsetRange]:
    """Each partition's offsets: a backfill's ranges to read; for a streaming run, where it starts."""
    ingest = options.view_as(IngestOptions)
    return kafka.plan_offset_ranges(
        options.view_as(StoreOptions).kafka_client(), ingest.input_topic, group_id=ingest.consumer_group,
        start_time=ingest.read_from and iso_time(ingest.read_from),
        stop_time=ingest.read_until and iso_time(ingest.read_until),
        max_records=ingest.max_records if ingest.bounded else None)


def build(pipeline: beam.Pipeline, ranges: list[OffsetRange]) -> None:
    """The ingest of `ranges` (see plan): read, validated, written or dead-lettered, offsets committed."""
    ingest, stores = pipeline.options.view_as(IngestOptions), pipeline.options.view_as(StoreOptions)
    client = stores.kafka_client()
    if ingest.bounded:
        deadline = time.time() + ingest.max_read_time if ingest.max_read_time is not None else None
        read = kafka.ReadOffsetRanges(client, ranges, deadline=deadline)
    else:
        read = kafka.ReadRecords(client, [ingest.input_topic], ingest.expansion_service,
                                 group_id=ingest.consumer_group)
    done = (pipeline
            | "ReadEvents" >> read
            | "IngestEvents" >> IngestEvents(
                pipeline.options.view_as(CassandraWriteOptions).write_enrollments(ingest.bounded),
                kafka.WriteAcknowledged(client, pipeline.options.view_as(DeadLetterOptions).dead_letter_topic,
                                         max_outage=ingest.write_outage_limit)))
    if ingest.commits:
        _ = done | "CommitOffsets" >> kafka.CommitOffsets(
            client, ingest.consumer_group, {(r.topic, r.partition): r.start for r in ranges},
            streaming=not ingest.bounded, every=ingest.commit_every)


def run(options: PipelineOptions, ranges: list[OffsetRange] | None = None) -> PipelineResult:
    """Starts the ingest of `ranges` (default: `plan(options)`) and returns without waiting for it."""
    ingest = options.view_as(IngestOptions)
    if not ingest.bounded:
        options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    build(pipeline, plan(options) if ranges is None else ranges)
    return pipeline.run()
