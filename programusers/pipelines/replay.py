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
from dataclasses import dataclass
from datetime import datetime

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.runners.runner import PipelineResult, PipelineState
from cassandra import ConsistencyLevel

from programusers import events, runners, settings
from programusers.io import kafka
from programusers.io.cassandra import CassandraConnection
from programusers.io.kafka import KafkaClientConfig, KafkaRecord
from programusers.metrics import counters
from programusers.options import from_args, store_flags
from programusers.pipelines import ingest
from programusers.transforms.enrollments import WriteEnrollments

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


@dataclass(frozen=True)
class ReplayRequest:
    kafka: KafkaClientConfig
    dead_letter_topic: str
    reason: str | None
    since: datetime | None
    cassandra: CassandraConnection
    programs_keyspace: str
    consistency: str
    write_concurrency: int
    retry_backoff: float
    max_write_outage: float | None


def run(options, request: ReplayRequest) -> PipelineResult:
    """Plans the dead-letter topic's ranges (dead letters written after this wait for the next replay),
    then starts the replay and returns without waiting for it."""
    ranges = kafka.plan_offset_ranges(request.kafka, request.dead_letter_topic, start_time=request.since)
    pipeline = beam.Pipeline(options=options)
    (pipeline
     | "ReadDeadLetters" >> kafka.ReadOffsetRanges(request.kafka, ranges)
     | "Counted" >> beam.Map(_counted)
     | "ReplayDeadLetters" >> ReplayDeadLetters(WriteEnrollments(
         request.cassandra, request.programs_keyspace, consistency=request.consistency,
         concurrency=request.write_concurrency, backoff=request.retry_backoff,
         max_outage=request.max_write_outage), request.reason))
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
    stores = from_args(args)
    request = ReplayRequest(
        stores.kafka_client(), args.dead_letter_topic, args.reason, args.since, stores.cassandra_connection(),
        args.programs_keyspace,
        args.consistency, args.write_concurrency, args.retry_backoff, args.max_write_outage or None)
    options = runners.pipeline_options(args.runner, args.pipeline_args)
    started = time.monotonic()
    result, outage = ingest.wait_for(lambda: run(options, request), request.cassandra, request.max_write_outage)
    if outage:
        _LOG.error("replay stopped: %s", outage)
        return 3
    if result is None:
        _LOG.error("replay stopped before its end; run it again (its writes are idempotent)")
        return 1
    _LOG.info("replay of %s %s in %.1fs: %s", request.dead_letter_topic, result.state, time.monotonic() - started,
              summary(counters(result)))
    return 0 if result.state == PipelineState.DONE else 1


def register(commands) -> None:
    parser = commands.add_parser(
        "replay", allow_abbrev=False, help="write the dead letters that today's code accepts",
        description="Reads the dead-letter topic (all of it, one --reason, or --since a time), parses each "
                    "payload again and writes the valid ones to Cassandra as the ingest would; reports how many "
                    "were written and how many stay bad. Never deletes or re-sends a dead letter.")
    parser.add_argument("--runner", choices=runners.RUNNERS, default="DirectRunner")
    parser.add_argument("--dead-letter-topic", default=f"{settings.ENV_NAME}.ml.programUsers.failed")
    parser.add_argument("--reason", choices=REASONS, help="replay only the dead letters of this reason")
    parser.add_argument("--since", type=ingest.iso_time, metavar="ISO_TIME",
                        help="replay only dead letters written at or after this time (UTC without an offset)")
    parser.add_argument("--programs-keyspace", default=settings.PROGRAMS_KEYSPACE)
    parser.add_argument("--consistency", default="LOCAL_QUORUM",
                        choices=[name for name in ConsistencyLevel.name_to_value if "SERIAL" not in name])
    parser.add_argument("--write-concurrency", type=int, default=32)
    parser.add_argument("--retry-backoff", type=float, default=0.5)
    parser.add_argument("--max-write-outage", type=float, default=ingest.DEFAULT_BOUNDED_OUTAGE, metavar="SECONDS",
                        help="fail when no Cassandra write has succeeded for this long (0: never)")
    store_flags(parser)
    parser.set_defaults(handler=_command)
