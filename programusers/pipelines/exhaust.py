"""The report pipeline (SPEC §3): one program's enrollment rows -> filtered, joined with consent and the
user cache -> sorted shards of CSV lines and their manifest. `run` starts it and returns; the request
lifecycle around it (programusers/report/lifecycle.py) waits for it, merges and publishes the shards.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from programusers import filters, report_rows
from programusers.io import redis
from programusers.io.cassandra import CassandraConnection
from programusers.io.pages import Page
from programusers.io.redis import RedisConnection
from programusers.model_config import ReportConfig
from programusers.options import in_range
from programusers.report_rows import PROFILE_FIELDS
from programusers.transforms import program_reads
from programusers.transforms.report import LookUpAndBuildReportRows
from programusers.transforms.shards import WriteSortedShards

USER_KEY_PREFIX = "user:"  # the platform's user cache: one hash per user at user:<userid>
# From this many rows the report is faster on DirectRunner with a worker process per core; below it the
# processes' memory (each imports Beam, ~140 MiB) outweighs their speed (README, Performance).
ROWS_FOR_WORKER_PROCESSES = 300_000


class ExhaustOptions(PipelineOptions):
    """The report pipeline's tuning; connection settings are the `exhaust` command's own flags."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # Larger pages read a little faster but cross Cassandra's tombstone warning threshold (1,000 a
        # page) where events had explicit nulls: a warning per page in every log.
        parser.add_argument("--cassandra-fetch-size", type=in_range(1), default=1000,
                            help="program_enrollment rows per page, which is a batch of lookups too")
        parser.add_argument("--read-slices", type=in_range(1, program_reads.MAX_SLICES), default=16,
                            help="ranges of user ids the program's partition is read in, spread over the workers")
        parser.add_argument("--consent-users-per-query", type=in_range(1), default=50,
                            help="users whose consent one query reads (user_id IN ...); 1: a query per user")
        parser.add_argument("--rows-per-shard", type=in_range(1), default=100_000,
                            help="report rows one worker sorts in memory (the most a shard holds)")
        parser.add_argument("--worker-processes", type=in_range(1), default=None,
                            help="DirectRunner's worker processes (default: one per core for a program of "
                                 f"{ROWS_FOR_WORKER_PROCESSES:,} rows or more, else the submitting process)")


@dataclass(frozen=True, kw_only=True)
class ExhaustSources:
    """Where the report reads from: Cassandra's connection and keyspaces, and the user cache's connection
    (the `exhaust` command resolves them from its flags, the environment and the model config)."""
    cassandra: CassandraConnection
    programs_keyspace: str
    consent_keyspace: str
    redis: RedisConnection


def requested_rows(rows: list[dict], request: filters.ReportRequest) -> Iterator[Page]:
    """The rows of a page that the request asks for, as one page (none: nothing)."""
    if kept := Page(row for row in rows if request.matches(row)):
        yield kept


@dataclass(frozen=True)
class ProgramFacts:
    """What the report decides of the request's program before its pipeline, in one Cassandra session."""
    # Program-wide: it chooses the columns and whether consent and the user cache are read at all.
    asks_for_consent: bool
    # How many enrollment rows the program has, roughly: it chooses how the in-process runner runs the
    # pipeline (worker_processes).
    estimated_rows: int


def program_facts(request: filters.ReportRequest, sources: ExhaustSources, options: PipelineOptions) -> ProgramFacts:
    keyspace, program_id = sources.programs_keyspace, request.program_id
    with sources.cassandra.session() as session:
        asks_for_consent = program_reads.program_asks_for_consent(
            session, keyspace, program_id, options.view_as(ExhaustOptions).cassandra_fetch_size)
        return ProgramFacts(asks_for_consent, program_reads.estimated_rows(session, keyspace, program_id))


def worker_processes(options: PipelineOptions, facts: ProgramFacts) -> int:
    """How many worker processes DirectRunner runs the program's report on (runners.with_worker_processes)."""
    chosen = options.view_as(ExhaustOptions).worker_processes
    if chosen:
        return chosen
    return (os.cpu_count() or 1) if facts.estimated_rows >= ROWS_FOR_WORKER_PROCESSES else 1


@dataclass(frozen=True, kw_only=True)
class ExhaustInputs:
    """What one run of the report pipeline works on."""
    request: filters.ReportRequest
    config: ReportConfig
    sources: ExhaustSources
    asks_for_consent: bool  # see ProgramFacts
    staging_dir: str  # where the sorted shards and their manifest go (see transforms/shards.py)
    shard_key: bytes  # the public half of the run's key (sealing.RunKey), which the shards are sealed for


def build(pipeline: beam.Pipeline, inputs: ExhaustInputs) -> None:
    """The report pipeline: the request's report rows as sorted shards and their manifest."""
    request, config, sources, asks_for_consent = inputs.request, inputs.config, inputs.sources, inputs.asks_for_consent
    tuning = pipeline.options.view_as(ExhaustOptions)
    consents = program_reads.ConsentHandler(sources.cassandra, sources.consent_keyspace, request.program_id,
                                            tuning.consent_users_per_query)
    profiles = redis.RedisHashHandler(sources.redis, USER_KEY_PREFIX, PROFILE_FIELDS)
    _ = (pipeline
         | "ReadEnrollments" >> program_reads.ReadProgramEnrollments(
             sources.cassandra, sources.programs_keyspace, request.program_id, tuning.cassandra_fetch_size,
             tuning.read_slices)
         | "KeepRequestedRows" >> beam.FlatMap(requested_rows, request).with_output_types(Page)
         | "LookUpAndBuildReportRows" >> LookUpAndBuildReportRows(config, asks_for_consent, consents, profiles)
         | "WriteSortedShards" >> WriteSortedShards(
             inputs.staging_dir, report_rows.header(asks_for_consent, config), tuning.rows_per_shard, inputs.shard_key))


def run(options: PipelineOptions, inputs: ExhaustInputs) -> PipelineResult:
    """Starts the report pipeline on `inputs` and returns without waiting for it."""
    pipeline = beam.Pipeline(options=options)
    build(pipeline, inputs)
    return pipeline.run()
