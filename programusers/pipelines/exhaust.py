"""The on-demand exhaust (SPEC §3): pending job_request rows -> one sorted CSV report each.

`programusers submit` records a request, `programusers exhaust` produces every pending one (a Beam batch
pipeline per request, duplicates once), `programusers status` shows where a request stands.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import apache_beam as beam
import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from programusers import filters, job_requests, records, runners, settings
from programusers.archive import zip_password
from programusers.crypto import PlatformCipher
from programusers.io import cassandra, files, postgres, redis
from programusers.job_requests import JOB_ID, JobRequest
from programusers.metrics import counters
from programusers.model_config import ModelConfigError, ReportConfig, default_model_config, load_model_config
from programusers.transforms.report import (PROFILE_FIELDS, ApplyProgramConsentRule, JoinIntoRecords,
                                           LookUpConsentAndProfiles)

_LOG = logging.getLogger(__name__)


CONSENT_READS = ("lookup", "scan")


class ExhaustOptions(PipelineOptions):
    """The report pipeline's tuning; connection settings are the `exhaust` command's own flags."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--cassandra-fetch-size", type=int, default=1000,
                            help="program_enrollment rows per page")
        parser.add_argument("--lookup-batch-size", type=int, default=500,
                            help="users per batch of consent queries and of Redis reads")
        parser.add_argument("--rows-per-shard", type=int, default=100_000,
                            help="report rows one worker sorts in memory")
        parser.add_argument("--consent-read", choices=CONSENT_READS, default="lookup",
                            help="lookup: one query per user of the program (cost follows the program); scan: "
                                 "read all of user_consent by token range (cost follows the table) - faster "
                                 "when the program's users exceed ~1/10 of the table's rows (bench/exhaust.py)")


@dataclass(frozen=True)
class Stores:
    """Where the report reads from. For what the model config names: flag > environment > model config."""
    cassandra_hosts: list[str]
    cassandra_port: int
    programs_keyspace: str
    consent_keyspace: str
    redis_host: str
    redis_port: int
    redis_db: int

    @classmethod
    def resolve(cls, args: argparse.Namespace, config: ReportConfig) -> Stores:
        return cls(
            cassandra_hosts=settings.cassandra_hosts(
                args.cassandra_hosts or settings.env("PROGRAMUSERS_CASSANDRA_HOSTS", config.cassandra_host)),
            cassandra_port=args.cassandra_port,
            programs_keyspace=args.programs_keyspace or settings.env("PROGRAMUSERS_PROGRAMS_KEYSPACE", config.keyspace),
            consent_keyspace=args.consent_keyspace,
            redis_host=args.redis_host or settings.env("PROGRAMUSERS_REDIS_HOST", config.redis_host),
            redis_port=args.redis_port or int(settings.env("PROGRAMUSERS_REDIS_PORT", str(config.redis_port))),
            redis_db=config.redis_db if args.redis_db is None else args.redis_db)


def _user_id(row: dict) -> str:
    return row["user_id"]


def run(request: filters.ReportRequest, config: ReportConfig, stores: Stores, temp_dir: str,
        options: PipelineOptions) -> beam.runners.runner.PipelineResult:
    """Writes the request's records as sorted shards under `temp_dir` (see files.merge_shards)."""
    tuning = options.view_as(ExhaustOptions)
    if tuning.consent_read == "scan":
        read_consent = cassandra.ScanConsent(stores.cassandra_hosts, stores.cassandra_port, stores.consent_keyspace,
                                             request.program_id)
    else:
        read_consent = cassandra.ReadConsent(stores.cassandra_hosts, stores.cassandra_port,
                                             stores.consent_keyspace, request.program_id, tuning.lookup_batch_size)
    read_profiles = redis.ReadUserHashes(stores.redis_host, stores.redis_port, stores.redis_db, PROFILE_FIELDS,
                                         tuning.lookup_batch_size)
    with beam.Pipeline(options=options) as pipeline:
        program_rows = pipeline | "ReadEnrollments" >> cassandra.ReadProgramEnrollments(
            stores.cassandra_hosts, stores.cassandra_port, stores.programs_keyspace, request.program_id,
            tuning.cassandra_fetch_size)
        _ = (program_rows
             | "KeepRequestedRows" >> beam.Filter(request.matches)
             | "KeyByUser" >> beam.WithKeys(_user_id)
             | "ApplyProgramConsentRule" >> ApplyProgramConsentRule(program_rows)
             | "LookUpConsentAndProfiles" >> LookUpConsentAndProfiles(read_consent, read_profiles)
             | "JoinIntoRecords" >> JoinIntoRecords(config)
             | "WriteSortedShards" >> files.WriteSortedShards(
                 temp_dir, config.columns, functools.partial(records.sort_key, config), tuning.rows_per_shard))
    return pipeline.result


# --- The request lifecycle ----------------------------------------------------------------------------

class ReportFailure(Exception):
    """A request that cannot be produced now; the message is safe for err_message (no PII)."""


@dataclass(frozen=True)
class ExhaustRun:
    """What every request of one `programusers exhaust` run shares."""
    config: ReportConfig
    stores: Stores
    options: PipelineOptions
    output: str
    staging: str
    cipher: PlatformCipher
    zip_crypto: bool
    dsn: str
    table: str


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # job_request's timestamps are UTC, zoneless


def _check_stores(stores: Stores) -> None:
    """Fails the request with a clear message when a store is down, before a pipeline is started."""
    try:
        cassandra.ping(stores.cassandra_hosts, stores.cassandra_port)
    except cassandra.Unavailable as exc:
        _LOG.warning("Cassandra %s:%s unreachable (%s)", ",".join(stores.cassandra_hosts), stores.cassandra_port,
                     type(exc).__name__)
        raise ReportFailure("Cassandra is unreachable") from None
    try:
        redis.ping(stores.redis_host, stores.redis_port, stores.redis_db)
    except redis.Unavailable as exc:
        _LOG.warning("Redis %s:%s unreachable (%s)", stores.redis_host, stores.redis_port, type(exc).__name__)
        raise ReportFailure("the user cache (Redis) is unreachable") from None


def produce(request: JobRequest, job: ExhaustRun) -> str:
    """Produces one request's report and returns its path. Raises RequestError or ReportFailure with a
    message for err_message, anything else when the pipeline failed."""
    report = filters.parse_request(request.request_data)
    if not request.encryption_key and job.config.requires_encryption_key:
        raise filters.RequestError("encryption_key is required for this report")
    password = zip_password(request.encryption_key, job.cipher) if request.encryption_key else None
    _check_stores(job.stores)
    now = datetime.now(timezone.utc)
    name = job_requests.report_name(request.request_id, now, job.config.tz)
    destination = FileSystems.join(job.output, JOB_ID, name + (".zip" if password else ".csv"))
    # The shards hold decrypted PII: they are staged apart from the published reports.
    temp_dir = FileSystems.join(job.staging, f"beam-temp-{name}-{uuid.uuid4().hex}")
    try:
        result = run(report, job.config, job.stores, temp_dir, job.options)
        _LOG.info("request %s: %s", request.request_id, json.dumps(counters(result), sort_keys=True))
        if not files.merge_shards(temp_dir, destination, now.astimezone(job.config.tz), password,
                                  member=name + ".csv", zip_crypto=job.zip_crypto):
            raise ReportFailure(job_requests.NO_DATA_FOUND)
    finally:
        files.remove_dir(temp_dir)
    return destination


def produce_group(group: list[JobRequest], job: ExhaustRun) -> None:
    """Produces the first of a group of duplicate requests; all of them get its outcome."""
    with postgres.session(job.dsn) as connection:
        claimed = [request for request in group if postgres.claim(connection, job.table, request)]
    if not claimed:
        return
    started = time.monotonic()
    leader = claimed[0]
    try:
        destination, message = produce(leader, job), None
    except (filters.RequestError, ReportFailure) as exc:
        destination, message = None, str(exc)
    except Exception as exc:  # a pipeline failure must not stop the other requests
        _LOG.error("request %s: report pipeline failed (%s)", leader.request_id, type(exc).__name__)
        destination, message = None, f"report pipeline failed ({type(exc).__name__}); see the exhaust log"
    completed, elapsed = _utcnow(), int((time.monotonic() - started) * 1000)
    with postgres.session(job.dsn) as connection:
        for request in claimed:
            if destination:
                postgres.mark_success(connection, job.table, request, [destination], completed, completed, elapsed)
            else:
                postgres.mark_failed(connection, job.table, request, job_requests.err_message(message), completed,
                                     elapsed)
    duplicates = f" (and {len(claimed) - 1} duplicate(s))" if len(claimed) > 1 else ""
    _LOG.info("request %s%s: %s in %d ms%s", leader.request_id, duplicates, "SUCCESS" if destination else "FAILED",
              elapsed, f": {message}" if message else "")


# --- Commands -----------------------------------------------------------------------------------------

def staging_location(path: str | None) -> str:
    """Where a report's sorted shards wait for the merge: a private location, never the published output.
    By default a folder only this user can read in the local temp dir (fine for local runners); with
    workers elsewhere pass a private shared path (e.g. a bucket with a lifecycle rule)."""
    if path:
        return path
    local = Path(tempfile.gettempdir()) / f"programusers-staging-{os.getuid()}"
    local.mkdir(mode=0o700, exist_ok=True)
    local.chmod(0o700)
    return str(local)


def _exhaust(args) -> int:
    try:
        config = load_model_config(args.config) if args.config else default_model_config()
        cipher = PlatformCipher.from_env()
        # ExhaustOptions' flags were parsed with the subcommand's (for --help); hand them on.
        tuning = {name: getattr(args, name) for name in ExhaustOptions([]).get_all_options(current_only=True)}
        options = runners.pipeline_options(args.runner, args.pipeline_args, **tuning)
        stores = Stores.resolve(args, config)
        with postgres.session(args.postgres_dsn) as connection:
            pending = postgres.pending_requests(connection, args.job_request_table, JOB_ID, args.request_id)
    except (ModelConfigError, runners.RunnerUnavailable, RuntimeError, ValueError, psycopg2.Error) as exc:
        _LOG.error("exhaust cannot run: %s", exc)
        return 2
    if args.request_id and not pending:
        _LOG.error("request %s is not pending (see `programusers status`)", args.request_id)
        return 1
    FileSystems.set_options(options)
    job = ExhaustRun(config, stores, options, args.output or config.output_path, staging_location(args.staging),
                     cipher, args.zip_crypto, args.postgres_dsn, args.job_request_table)
    _LOG.info("%d pending request(s) on %s", len(pending), args.runner)
    for group in job_requests.group_duplicates(pending):
        try:
            produce_group(group, job)
        except psycopg2.Error as exc:  # job_request unreachable now: the other groups may still go through
            _LOG.error("request %s: could not record its status (%s)", group[0].request_id, type(exc).__name__)
    return 0


def _submit(args) -> int:
    data = job_requests.request_data(args.program_id, args.filter or [])
    try:
        filters.parse_request(data)
    except filters.RequestError as exc:
        _LOG.error("not submitted: %s", exc)
        return 2
    request = JobRequest(tag=job_requests.tag_for(args.program_id, args.channel),
                         request_id=job_requests.new_request_id(), request_data=data, requested_by=args.requested_by,
                         requested_channel=args.channel, encryption_key=args.encryption_key)
    if column := request.too_long():
        _LOG.error("not submitted: %s is longer than job_request allows", column)
        return 2
    try:
        with postgres.session(args.postgres_dsn) as connection:
            postgres.insert_request(connection, args.job_request_table, request, JOB_ID, _utcnow())
    except psycopg2.Error as exc:
        _LOG.error("not submitted: job_request is unreachable (%s)", type(exc).__name__)
        return 2
    print(request.request_id)
    return 0


def _shown(value) -> str:
    if value is None:
        return ""
    return ", ".join(value) if isinstance(value, list) else str(value)


def _status(args) -> int:
    with postgres.session(args.postgres_dsn) as connection:
        rows = postgres.request_status(connection, args.job_request_table, args.request_id)
    print("\n\n".join("\n".join(f"{name}: {_shown(value)}" for name, value in row.items()) for row in rows))
    return 0 if rows else 1


def _job_request_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postgres-dsn", default=settings.POSTGRES_DSN)
    parser.add_argument("--job-request-table", default=settings.JOB_REQUEST_TABLE)


def register(commands) -> None:
    submit = commands.add_parser("submit", help="submit a program user report request; prints its request_id")
    submit.add_argument("--program-id", required=True)
    submit.add_argument("--filter", nargs=3, action="append", metavar=("NAME", "OP", "VALUE"),
                        help="e.g. \"user_locations['district_id']\" = ID; for 'in' VALUE is comma-separated; "
                             "prefix user_consent. for the consent table (user_consent.user_id)")
    submit.add_argument("--requested-by", required=True)
    submit.add_argument("--channel", help="requested_channel; the tag is PROGRAM_ID:CHANNEL")
    submit.add_argument("--encryption-key", help="the zip password (plain, or encrypted with the platform salt)")
    _job_request_flags(submit)
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="show a report request's status (no PII)")
    status.add_argument("request_id")
    _job_request_flags(status)
    status.set_defaults(handler=_status)

    exhaust = commands.add_parser("exhaust", help="produce every pending report request (or one)")
    exhaust.add_argument("--request-id", help="only this request")
    exhaust.add_argument("--runner", choices=runners.RUNNERS, default="DirectRunner")
    exhaust.add_argument("--config", help="model config JSON (default: the packaged one)")
    exhaust.add_argument("--output", help="any Beam filesystem path (default: the model config's, ml_reports/)")
    exhaust.add_argument("--staging", help="private Beam path for the sorted shards (they hold decrypted PII); "
                                           "default: a folder only this user can read in the local temp dir")
    exhaust.add_argument("--zip-crypto", action="store_true",
                         help="encrypt zips with legacy ZipCrypto instead of AES-256, for old unzip tools")
    exhaust.add_argument("--cassandra-hosts", help="comma-separated (default: $PROGRAMUSERS_CASSANDRA_HOSTS, "
                                                   "else the model config's sparkCassandraConnectionHost)")
    exhaust.add_argument("--cassandra-port", type=int, default=settings.CASSANDRA_PORT)
    exhaust.add_argument("--programs-keyspace", help="default: $PROGRAMUSERS_PROGRAMS_KEYSPACE, else keyspace_name")
    exhaust.add_argument("--consent-keyspace", default=settings.CONSENT_KEYSPACE)
    exhaust.add_argument("--redis-host", help="default: $PROGRAMUSERS_REDIS_HOST, else sparkRedisConnectionHost")
    exhaust.add_argument("--redis-port", type=int, help="default: $PROGRAMUSERS_REDIS_PORT, else sparkUserDbRedisPort")
    exhaust.add_argument("--redis-db", type=int, help="default: the model config's sparkUserDbRedisIndex")
    _job_request_flags(exhaust)
    ExhaustOptions._add_argparse_args(exhaust.add_argument_group("pipeline options"))  # noqa: SLF001
    exhaust.set_defaults(handler=_exhaust)
