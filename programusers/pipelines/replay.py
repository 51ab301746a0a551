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
import time

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from programusers import events, runners
from programusers.io import kafka
from programusers.io.kafka import KafkaRecord
from programusers.metrics import counters
from programusers.options import StoreOptions, option_values, store_flags
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
        parser.add_argument("--since", metavar="ISO_TIME",
                            help="replay only dead letters written at or after this time (UTC without an offset)")

    def validate_flags(self) -> None:
        if self.since:
            try:
                ingest.iso_time(self.since)
            except ValueError:
                raise ValueError("--since: not an ISO-8601 date or time") from None


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


def summary(totals: dict[str, int]) -> str:
    """The run's counts in one line (counts and reasons only)."""
    still_bad = {name.removeprefix("still_bad_"): n for name, n in sorted(totals.items())
                 if name.startswith("still_bad_")}
    return (f"{totals.get('dead_letters_read', 0)} dead letter(s) read, {totals.get('other_reason', 0)} of another "
            f"reason skipped, {totals.get('now_valid', 0)} valid now: {totals.get('rows_written', 0)} row(s) written, "
            f"{totals.get('rows_deleted', 0)} deleted; {sum(still_bad.values())} still bad"
            + (f" ({', '.join(f'{k}={v}' for k, v in still_bad.items())})" if still_bad else "")
            + "; the dead letters stay in the topic")


def _command(args) -> int:
    options = runners.pipeline_options(args.runner, args.pipeline_args,
                                       **option_values(args, ReplayOptions, ingest.DeadLetterOptions,
                                                       ingest.CassandraWriteOptions, StoreOptions))
    replay, writes = options.view_as(ReplayOptions), options.view_as(ingest.CassandraWriteOptions)
    try:
        replay.validate_flags()
    except ValueError as error:
        raise SystemExit(str(error)) from None
    started = time.monotonic()
    result, outage = ingest.wait_for(lambda: run(options), options.view_as(StoreOptions).cassandra_connection(),
                                     writes.outage_limit(bounded=True))
    if outage:
        _LOG.error("replay stopped: %s", outage)
        return 3
    if result is None:
        _LOG.error("replay stopped before its end; run it again (its writes are idempotent)")
        return 1
    _LOG.info("replay of %s %s in %.1fs: %s", options.view_as(ingest.DeadLetterOptions).dead_letter_topic,
              result.state, time.monotonic() - started,
              summary(counters(result)))
    return 0 if result.state == PipelineState.DONE else 1


def register(commands) -> None:
    parser = commands.add_parser(
        "replay", allow_abbrev=False, help="write the dead letters that today's code accepts",
        description="Reads the dead-letter topic (all of it, one --reason, or --since a time), parses each "
                    "payload again and writes the valid ones to Cassandra as the ingest would; reports how many "
                    "were written and how many stay bad. Never deletes or re-sends a dead letter.")
    parser.add_argument("--runner", choices=runners.RUNNERS, default="DirectRunner")
    ingest.DeadLetterOptions._add_argparse_args(parser)
    ReplayOptions._add_argparse_args(parser)
    ingest.CassandraWriteOptions._add_argparse_args(parser)
    store_flags(parser)
    parser.set_defaults(handler=_command)
