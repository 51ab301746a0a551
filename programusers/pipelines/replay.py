"""`programusers replay`: the dead-letter topic back through today's parser into Cassandra (SPEC §5).

    ReadDeadLetters -> Revalidate -+-> WriteEnrollments -> rejected writes -+-> CountStillBad
                                   +-> still bad ---------------------------+

Each dead letter's payload is parsed again with `events.parse_event`; the events valid now are written
through the ingest's own sink (`transforms.enrollments.WriteEnrollments`), stamped as the ingest would have
stamped them (`updatedAt`, else `createdAt`, else the original record's Kafka time, which the dead
letter carries), so a replay run twice leaves the table as once. The rest stay bad and are counted by
reason. Replay never writes to Kafka: it neither deletes dead letters nor dead-letters them again.

The read is bounded exactly, as the ingest's backfills are: the topic's offset ranges are planned before
the pipeline (from the start, or from `--since`, up to each partition's end offset at that moment) and
read with kafka.ReadOffsetRanges; so replay needs no Java expansion service and runs on any runner,
DirectRunner by default. Nothing is committed.
"""
from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from programusers import events
from programusers.io import kafka
from programusers.io.kafka import KafkaRecord
from programusers.options import StoreOptions
from programusers.pipelines import ingest

METRICS_NAMESPACE = "programusers.replay"
STILL_BAD = "still_bad"
REASONS = [reason.value for reason in events.Reason if reason is not events.Reason.NOT_A_DEAD_LETTER]
_LOG = logging.getLogger(__name__)


def revalidate(record: KafkaRecord, reason: str | None):
    """A dead letter -> None (another reason than the one asked for), (context, mutation) when today's
    parser accepts its payload, else (context, DeadLetter) saying why it is still bad. `context` is the
    dead letter's (partition, offset). Pure."""
    context = (record.partition, record.offset)
    try:
        dead = json.loads(record.value)
    except (TypeError, ValueError):
        dead = None
    if not isinstance(dead, dict) or "payload" not in dead or "reason" not in dead:
        return context, events.DeadLetter(events.Reason.NOT_A_DEAD_LETTER, None,
                                          "not a dead-letter record of the ingest")
    if reason is not None and dead["reason"] != reason:
        return None
    payload = dead["payload"]
    # The ingest stamps an event without dates with its Kafka time; older dead letters lack that time
    # and fall back on their own (the same at every replay, so replays still converge).
    original = dead.get("timestamp")
    millis = original if isinstance(original, int) and not isinstance(original, bool) else record.timestamp
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return context, events.parse_event(raw, ingest.arrival_micros(millis))


class _RevalidateFn(beam.DoFn):
    """A dead letter's KafkaRecord -> (context, mutation), or (context, DeadLetter) on the STILL_BAD output."""

    def __init__(self, reason: str | None):
        self._reason = reason
        self._valid = Metrics.counter(METRICS_NAMESPACE, "now_valid")
        self._skipped = Metrics.counter(METRICS_NAMESPACE, "other_reason")

    def process(self, record: KafkaRecord):
        result = revalidate(record, self._reason)
        if result is None:
            self._skipped.inc()
        elif isinstance(result[1], events.DeadLetter):
            yield pvalue.TaggedOutput(STILL_BAD, result)
        else:
            self._valid.inc()
            yield result


def _counted(record: KafkaRecord) -> KafkaRecord:
    Metrics.counter(METRICS_NAMESPACE, "dead_letters_read").inc()
    return record


def _count_still_bad(element) -> None:
    _, dead = element
    Metrics.counter(METRICS_NAMESPACE, f"still_bad_{dead.reason}").inc()


class ReplayDeadLetters(beam.PTransform):
    """Dead letters' KafkaRecords -> the now-valid ones written by `write_enrollments`; the rest counted by
    reason."""

    def __init__(self, write_enrollments: beam.PTransform, reason: str | None = None):
        super().__init__()
        self._write_enrollments, self._reason = write_enrollments, reason

    def expand(self, records):
        parsed = records | "Revalidate" >> beam.ParDo(_RevalidateFn(self._reason)).with_outputs(STILL_BAD,
                                                                                                main="mutations")
        _, rejected = parsed.mutations | "WriteEnrollments" >> self._write_enrollments
        return ((parsed[STILL_BAD], rejected)
                | "MergeStillBad" >> beam.Flatten()
                | "CountStillBad" >> beam.Map(_count_still_bad))


class ReplayOptions(PipelineOptions):
    """Which dead letters a replay reads (of ingest.DeadLetterOptions' topic); it writes as the ingest does
    (ingest.CassandraWriteOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--reason", choices=REASONS, help="replay only the dead letters of this reason")
        parser.add_argument("--since", type=ingest.iso_time_text, metavar="ISO_TIME",
                            help="replay only dead letters written at or after this time (UTC without an offset)")


def plan(options: PipelineOptions) -> list[kafka.OffsetRange]:
    """The dead-letter topic's ranges: from the start, or from --since, up to each partition's end offset
    now (dead letters written after this wait for the next replay)."""
    replay = options.view_as(ReplayOptions)
    return kafka.plan_offset_ranges(options.view_as(StoreOptions).kafka_client(),
                                    options.view_as(ingest.DeadLetterOptions).dead_letter_topic,
                                    start_time=replay.since and ingest.iso_time(replay.since))


def build(pipeline: beam.Pipeline, ranges: list[kafka.OffsetRange]) -> None:
    """The replay of the dead letters in `ranges`."""
    replay = pipeline.options.view_as(ReplayOptions)
    (pipeline
     | "ReadDeadLetters" >> kafka.ReadOffsetRanges(pipeline.options.view_as(StoreOptions).kafka_client(), ranges)
     | "Counted" >> beam.Map(_counted)
     | "ReplayDeadLetters" >> ReplayDeadLetters(
         pipeline.options.view_as(ingest.CassandraWriteOptions).write_enrollments(bounded=True), replay.reason))


def run(options: PipelineOptions) -> PipelineResult:
    """Plans the ranges, then starts the replay and returns without waiting for it."""
    pipeline = beam.Pipeline(options=options)
    build(pipeline, plan(options))
    return pipeline.run()
