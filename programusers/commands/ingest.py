"""`programusers ingest`: the ingest's flags as pipeline options, the run to its end, its exit code."""
from __future__ import annotations

import logging
import time

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from programusers import commands, runners
from programusers.metrics import counters
from programusers.options import StoreOptions
from programusers.pipelines.ingest import (
    CassandraWriteOptions,
    DeadLetterOptions,
    IngestOptions,
    plan,
    run,
)

_LOG = logging.getLogger(__name__)


def pipeline_options(args) -> PipelineOptions:
    """The `ingest` command's flags as pipeline options, refusing runs the runner cannot do. Without --runner, a
    backfill runs in this process (DirectRunner: it reads with a plain Kafka consumer, so it needs no Java and
    no job server, whose start and stop cost a short backfill more than its work) and a streaming run on
    PrismRunner (KafkaIO)."""
    if args.runner is None:
        args.runner = "PrismRunner"
        if commands.pipeline_options(args).view_as(IngestOptions).bounded:
            args.runner = "DirectRunner"
    options = commands.pipeline_options(args)
    ingest = options.view_as(IngestOptions)
    if not ingest.bounded and args.runner == "DirectRunner":
        raise SystemExit("DirectRunner runs backfills only: pass --backfill (or --until, --max-records, ...)")
    return options


def _command(args) -> int:
    options = pipeline_options(args)
    ingest = options.view_as(IngestOptions)
    ranges = plan(options)
    planned = sum(r.size for r in ranges)
    if ingest.bounded:
        _LOG.info("ingest: a backfill of %d record(s) of %s (%s) on %s%s", planned, ingest.input_topic,
                  ", ".join(f"[{r.partition}] {r.start}..{r.end}" for r in ranges), args.runner,
                  "" if ingest.commits else "; it commits no offset")
    runners.collect_less()
    started = time.monotonic()
    result, outage = commands.wait_for(lambda: run(options, ranges),
                                       options.view_as(StoreOptions).cassandra_connection(), ingest.write_outage_limit)
    if outage:
        _LOG.error("ingest stopped: %s", outage)
        return 3
    if result is None:
        _LOG.info("ingest stopped with its job server; what was committed stays committed")
        return 1 if ingest.bounded else 0  # a backfill stopped before its end is not done
    elapsed, totals = time.monotonic() - started, counters(result)
    _LOG.info("ingest %s after %.1fs, %.0f events/s: %s", result.state, elapsed,
              totals.get("events_read", 0) / elapsed,
              ", ".join(f"{name}={value}" for name, value in sorted(totals.items())))
    if ingest.bounded and result.state == PipelineState.DONE and totals.get("ranges_unfinished", 0):
        _LOG.error("ingest stopped before its ranges were read: %d of %d record(s) read, --max-read-time %s s "
                   "reached; what was written is committed, run again to read the rest",
                   totals.get("events_read", 0), planned, ingest.max_read_time)
        return 4
    if not ingest.bounded and result.state == PipelineState.CANCELLED:
        return 0  # a streaming run ends when it is stopped
    return 0 if result.state == PipelineState.DONE else 1


def register(subcommands) -> None:
    commands.add_pipeline_command(
        subcommands, "ingest", handler=_command, default_runner=None,  # chosen by pipeline_options
        option_classes=(IngestOptions, DeadLetterOptions, CassandraWriteOptions),
        help="stream program-user events from Kafka into Cassandra",
        description="Kafka program-user events -> Cassandra program_enrollment; bad events -> the dead-letter "
                    "topic. Streaming until stopped (Ctrl-C, SIGTERM), or a backfill. Without --runner a backfill runs "
                    "in this process (DirectRunner), a streaming ingest on PrismRunner. Other flags go to Beam "
                    "(e.g. --flink_master, --checkpointing_interval).")
