"""`programusers ingest`: program-user events from Kafka into Cassandra's program_enrollment (SPEC §2).

    ReadEvents -> ParseEvents -+-> WriteEnrollments -> failed writes -+-> FormatDeadLetters -> WriteDeadLetters
                               +-> rejected events -------------------+

Without --max-records / --max-read-time the pipeline runs in streaming mode until it is stopped; with
either it reads that much and ends (backfills, tests).

Delivery. Every write is idempotent (stamped USING TIMESTAMP from the event), so reading a record twice
is harmless and only losing one is not. Committed consumer-group offsets are where a fresh job starts:
- Streaming with --commit-offsets (the default): KafkaIO commits from a stable-input step, once the
  runner has made the records durable. On FlinkRunner (pass --checkpointing_interval) that is after a
  checkpoint completes, which happens only after every bundle before it finished, ours included, and
  our sink finishes a bundle only when each of its writes succeeded or was rejected by Cassandra
  (dead-lettered); a transient failure holds the bundle until Cassandra answers (see cassandra_sink):
  committed offsets never pass a record that is neither written nor dead-lettered (at-least-once).
  A bounded run fails after --max-write-outage seconds without a successful write. PrismRunner
  has no stable-input support, so it needs --no-commit-offsets: nothing is committed and a restart
  re-reads from the last committed offsets, else from the earliest.
- Bounded runs never commit: KafkaIO's bounded reader commits as soon as it has read, before anything
  is written (seen on Direct and Prism: offsets committed although a later step failed). They start
  from the group's committed offsets, else the earliest, and leave them as they were.
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
from apache_beam.runners.runner import PipelineResult, PipelineState
from cassandra import ConsistencyLevel

from programusers import events, runners, settings
from programusers.io import cassandra_sink, kafka
from programusers.io.kafka import KafkaRecord
from programusers.metrics import counters
from programusers.options import StoreOptions, option_values, store_flags
from programusers.transforms.enrollments import WriteEnrollments

METRICS_NAMESPACE = "programusers.ingest"
REJECTED = "rejected"
DEFAULT_BOUNDED_OUTAGE = 600.0  # seconds: a bounded run (a backfill) fails rather than wait for ever
_LOG = logging.getLogger(__name__)


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input-topic", default=f"{settings.ENV_NAME}.ml.programUsers.raw")
        parser.add_argument("--dead-letter-topic", default=f"{settings.ENV_NAME}.ml.programUsers.failed")
        parser.add_argument("--consumer-group", default=f"{settings.ENV_NAME}.programusers.ingest")
        parser.add_argument("--commit-offsets", action=argparse.BooleanOptionalAction, default=True,
                            help="commit the group's offsets of a streaming run (needs a runner with "
                                 "stable-input support, e.g. Flink); bounded runs never commit")
        parser.add_argument("--expansion-service", default=settings.EXPANSION_SERVICE,
                            help="Beam Java expansion service for KafkaIO, host:port")
        parser.add_argument("--programs-keyspace", default=settings.PROGRAMS_KEYSPACE)
        parser.add_argument("--consistency", default="LOCAL_QUORUM",
                            choices=[name for name in ConsistencyLevel.name_to_value if "SERIAL" not in name])
        parser.add_argument("--write-concurrency", type=int, default=32,
                            help="Cassandra writes in flight per worker thread")
        parser.add_argument("--retry-backoff", type=float, default=0.5,
                            help="seconds before a transiently failed write is tried again; doubled for each "
                                 f"next try, at most {cassandra_sink.MAX_BACKOFF_SECONDS:g} s. Transient failures "
                                 "are retried until they succeed, never dead-lettered")
        parser.add_argument("--max-write-outage", type=float, metavar="SECONDS",
                            help="fail the run when no Cassandra write has succeeded for this long (0: never); "
                                 f"default {DEFAULT_BOUNDED_OUTAGE:g} for bounded runs, never for streaming ones, "
                                 "which hold the stream and log once a minute while Cassandra is unreachable")
        parser.add_argument("--max-records", type=int,
                            help="read this many records, then stop; from 10,000 on KafkaIO shares them evenly "
                                 "among the partitions, and a partition holding fewer waits: add --max-read-time")
        parser.add_argument("--max-read-time", type=int, help="read for this many seconds, then stop")

    @property
    def bounded(self) -> bool:
        return self.max_records is not None or self.max_read_time is not None

    @property
    def write_outage_limit(self) -> float | None:
        """Seconds without a successful write before the run fails; None: wait for ever."""
        if self.max_write_outage is None:
            return DEFAULT_BOUNDED_OUTAGE if self.bounded else None
        return self.max_write_outage or None


def arrival_micros(kafka_timestamp_millis: int) -> int:
    """An event's fallback write time: its Kafka timestamp, which a replay sees again, else now."""
    return kafka_timestamp_millis * 1000 if kafka_timestamp_millis >= 0 else time.time_ns() // 1000


def dead_letter_message(record: KafkaRecord, dead: events.DeadLetter, failed_at: datetime) -> tuple[bytes, bytes]:
    """The dead-letter topic's (key, value): the record's own key, else its coordinates, and SPEC's JSON."""
    key = record.key if record.key is not None else f"{record.topic}/{record.partition}/{record.offset}".encode()
    return key, events.dead_letter_record(dead, record.value, record.topic, record.partition, record.offset,
                                          failed_at, record.timestamp)


class _ParseFn(beam.DoFn):
    """KafkaRecord -> (record, mutation), or (record, DeadLetter) on the REJECTED output."""

    def __init__(self):
        self._read = Metrics.counter(METRICS_NAMESPACE, "events_read")

    def process(self, record: KafkaRecord):
        self._read.inc()
        result = events.parse_event(record.value, arrival_micros(record.timestamp))
        if isinstance(result, events.DeadLetter):
            yield pvalue.TaggedOutput(REJECTED, (record, result))
        else:
            yield record, result


class _FormatDeadLetterFn(beam.DoFn):
    def process(self, element):
        record, dead = element
        Metrics.counter(METRICS_NAMESPACE, f"dead_lettered_{dead.reason}").inc()
        yield dead_letter_message(record, dead, datetime.now(UTC))


class IngestEvents(beam.PTransform):
    """KafkaRecords -> enrollment rows written by `write_enrollments` (see WriteEnrollments); returns
    every dead letter, from parsing and from writing, as a (key, value) pair for the dead-letter topic."""

    def __init__(self, write_enrollments: beam.PTransform):
        super().__init__()
        self._write_enrollments = write_enrollments

    def expand(self, records):
        parsed = records | "ParseEvents" >> beam.ParDo(_ParseFn()).with_outputs(REJECTED, main="mutations")
        failed = parsed.mutations | "WriteEnrollments" >> self._write_enrollments
        return ((parsed[REJECTED], failed)
                | "MergeDeadLetters" >> beam.Flatten()
                | "FormatDeadLetters" >> beam.ParDo(_FormatDeadLetterFn()).with_output_types(tuple[bytes, bytes]))


def run(options: PipelineOptions) -> PipelineResult:
    """Starts the ingest and returns without waiting for it."""
    ingest, stores = options.view_as(IngestOptions), options.view_as(StoreOptions)
    if not ingest.bounded:
        options.view_as(StandardOptions).streaming = True
    client = stores.kafka_client()
    pipeline = beam.Pipeline(options=options)
    (pipeline
     | "ReadEvents" >> kafka.ReadRecords(
         client, [ingest.input_topic], ingest.expansion_service, group_id=ingest.consumer_group,
         commit_offsets=ingest.commit_offsets and not ingest.bounded,
         max_records=ingest.max_records, max_read_time=ingest.max_read_time)
     | "IngestEvents" >> IngestEvents(WriteEnrollments(
         stores.cassandra_connection(), ingest.programs_keyspace, consistency=ingest.consistency,
         concurrency=ingest.write_concurrency, backoff=ingest.retry_backoff, max_outage=ingest.write_outage_limit))
     | "WriteDeadLetters" >> kafka.write_to_kafka(client, ingest.dead_letter_topic, ingest.expansion_service))
    return pipeline.run()


def pipeline_options(args) -> PipelineOptions:
    """The `ingest` command's flags as pipeline options, refusing runs the runner cannot do."""
    options = runners.pipeline_options(args.runner, args.pipeline_args,
                                       **option_values(args, IngestOptions, StoreOptions))
    ingest = options.view_as(IngestOptions)
    if not ingest.bounded and args.runner == "DirectRunner":
        raise SystemExit("DirectRunner reads Kafka bounded only: pass --max-records or --max-read-time")
    if not ingest.bounded and ingest.commit_offsets and args.runner == "PrismRunner":
        raise SystemExit("PrismRunner cannot commit Kafka offsets while streaming (no stable-input support): "
                         "pass --no-commit-offsets (a restart then re-reads; the writes are idempotent)")
    return options


def wait_for(start) -> tuple[PipelineResult | None, str | None]:
    """Runs `start()` (which returns a PipelineResult) to its end: (result, None), or (None, the
    reason) when Cassandra stayed unreachable past the outage limit. The in-process runner raises the
    worker's error from run(), Prism from wait_until_finish(), quoting it."""
    try:
        result = start()
        result.wait_until_finish()
        return result, None
    except Exception as error:
        if message := cassandra_sink.outage_message(error):
            return None, message
        raise


def _command(args) -> int:
    started = time.monotonic()
    options = pipeline_options(args)
    # A streaming run ends with Ctrl-C, when Beam stops the job server it started, the job with it.
    result, outage = wait_for(lambda: run(options))
    if outage:
        _LOG.error("ingest stopped: %s", outage)
        return 3
    elapsed, totals = time.monotonic() - started, counters(result)
    _LOG.info("ingest %s after %.1fs, %.0f events/s: %s", result.state, elapsed,
              totals.get("events_read", 0) / elapsed,
              ", ".join(f"{name}={value}" for name, value in sorted(totals.items())))
    return 0 if result.state == PipelineState.DONE else 1


def register(commands) -> None:
    parser = commands.add_parser(
        "ingest", allow_abbrev=False, help="stream program-user events from Kafka into Cassandra",
        description="Kafka program-user events -> Cassandra program_enrollment; bad events -> the dead-letter "
                    "topic. Other flags go to Beam (e.g. --flink_master, --checkpointing_interval).")
    parser.add_argument("--runner", choices=runners.RUNNERS, default="PrismRunner")
    IngestOptions._add_argparse_args(parser)
    store_flags(parser)
    parser.set_defaults(handler=_command)
