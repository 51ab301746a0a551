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
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import apache_beam as beam
import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

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
    """A request that cannot be produced now but may be later (iteration + 1); the message is safe for
    err_message (no PII)."""


# What err_message says of each store when it stays unreachable.
CASSANDRA_DOWN = "Cassandra is unreachable"
REDIS_DOWN = "the user cache (Redis) is unreachable"
NO_PROFILES = "the user cache has no profile for any consenting user"
MAX_PIPELINE_ATTEMPTS = 3


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
    leases: postgres.Leases
    file_mode: int = 0o600
    max_store_outage: float = 120.0
    min_profile_share: float = 0.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # job_request's timestamps are UTC, zoneless


def _unreachable(stores: Stores, store: str) -> bool:
    try:
        if store == CASSANDRA_DOWN:
            cassandra.ping(stores.cassandra_hosts, stores.cassandra_port)
        else:
            redis.ping(stores.redis_host, stores.redis_port, stores.redis_db)
        return False
    except (*cassandra.Unavailable, redis.Unavailable):
        return True


def _await_store(stores: Stores, store: str, deadline: float, request_id: str) -> None:
    """Returns once `store` answers; raises ReportFailure naming it when it is still down at `deadline`."""
    delay = 1.0
    while _unreachable(stores, store):
        if time.monotonic() + delay > deadline:
            raise ReportFailure(store)
        _LOG.warning("request %s: %s; trying again in %.0fs", request_id, store, delay)
        time.sleep(delay)
        delay = min(delay * 2, 15.0)


def _store_behind(error: Exception, stores: Stores) -> str | None:
    """The store a failed pipeline could not reach, if any. Redis is suspected only when the failure came
    from its client (a program without PII consent never reads the cache, so its outage is no excuse)."""
    if _unreachable(stores, CASSANDRA_DOWN):
        return CASSANDRA_DOWN
    from_redis = "redis" in f"{type(error).__module__} {error}".lower()
    return REDIS_DOWN if from_redis and _unreachable(stores, REDIS_DOWN) else None


def _run_through_outages(request: JobRequest, report: filters.ReportRequest, job: ExhaustRun,
                         workspace: str) -> dict[str, int]:
    """Runs the pipeline, waiting for a store that is down (up to --max-store-outage in all) and running
    it again after one failed it; returns its counters."""
    deadline, store, attempt = time.monotonic() + job.max_store_outage, CASSANDRA_DOWN, 1
    while True:
        _await_store(job.stores, store, deadline, request.request_id)
        try:
            return counters(run(report, job.config, job.stores, workspace, job.options))
        except Exception as error:
            store = _store_behind(error, job.stores)
            if store is None:
                raise
            if attempt == MAX_PIPELINE_ATTEMPTS:
                raise ReportFailure(store) from None
        _LOG.warning("request %s: the pipeline failed: %s; running it again once it answers",
                     request.request_id, store)
        files.remove_dir(workspace)
        files.make_private_dir(workspace)
        attempt += 1


def _check_profiles(totals: dict[str, int], min_share: float) -> None:
    """A cache that answers but lacks the consenting users' profiles (e.g. restarted empty) would publish
    blank personal columns: fail the request instead, so a later run can produce it right."""
    found = totals.get("profiles_found", 0)
    consenting = found + totals.get("profile_missing", 0)
    if consenting and found / consenting <= min_share:
        raise ReportFailure(NO_PROFILES if not found else
                            f"the user cache has a profile for only {found} of {consenting} consenting users")


_WORKSPACE = re.compile(r"([0-9a-f]{16})-[0-9a-f]{32}")


def workspace_name(lease_key: int) -> str:
    """A request's staging folder, named after its lease so that a later run can tell whether the process
    that made it is alive."""
    return f"{lease_key & (2**64 - 1):016x}-{uuid.uuid4().hex}"


def lease_of_workspace(name: str) -> int | None:
    """The lease key in a staging folder's name; None for a name of another shape."""
    if not (match := _WORKSPACE.fullmatch(name)):
        return None
    value = int(match[1], 16)
    return value - 2**64 if value >= 2**63 else value


def produce(request: JobRequest, job: ExhaustRun) -> str:
    """Produces one request's report and returns its published path. Raises RequestError (a rejection),
    ReportFailure (worth a later try), anything else when the pipeline failed."""
    report = filters.parse_request(request.request_data)
    if not request.encryption_key and job.config.requires_encryption_key:
        raise filters.RequestError("encryption_key is required for this report")
    password = zip_password(request.encryption_key, job.cipher) if request.encryption_key else None
    now = datetime.now(timezone.utc)
    name = job_requests.report_name(request.request_id, now, job.config.tz) + (".zip" if password else ".csv")
    destination = FileSystems.join(job.output, JOB_ID, name)
    # Shards and the merged file hold decrypted PII: they stay in private staging until the file is whole.
    workspace = FileSystems.join(job.staging, workspace_name(job.leases.key(request)))
    files.make_private_dir(workspace)
    try:
        totals = _run_through_outages(request, report, job, workspace)
        _LOG.info("request %s: %s", request.request_id, json.dumps(totals, sort_keys=True))
        records_built = totals.get("records", 0)
        if not records_built:
            raise ReportFailure(job_requests.NO_DATA_FOUND)
        _check_profiles(totals, job.min_profile_share)
        merged = FileSystems.join(workspace, name)
        rows = files.merge_shards(workspace, merged, now.astimezone(job.config.tz), password,
                                  member=name.rsplit(".", 1)[0] + ".csv", zip_crypto=job.zip_crypto)
        if rows != records_built:
            raise ReportFailure(f"report incomplete: {rows} of {records_built} rows reached the merge "
                                "(is --staging shared with the workers?); nothing published")
        if not job.leases.held():  # another run may have reclaimed the request meanwhile
            raise ReportFailure("lost the request's lease (PostgreSQL session ended); nothing published")
        files.publish(merged, destination, job.file_mode)
    finally:
        files.remove_dir(workspace)
    return destination


def _outcome(leader: JobRequest, job: ExhaustRun) -> tuple[str | None, str | None, bool]:
    """(published path, err_message, final) of producing `leader`."""
    try:
        return produce(leader, job), None, False
    except filters.RequestError as exc:  # a rejection: no retry can change it
        return None, str(exc), True
    except ReportFailure as exc:
        return None, str(exc), False
    except Exception as exc:  # a pipeline failure must not stop the other requests
        _LOG.error("request %s: report pipeline failed (%s)", leader.request_id, type(exc).__name__)
        return None, f"report pipeline failed ({type(exc).__name__}); see the exhaust log", False


def _take(request: JobRequest, job: ExhaustRun) -> int | None:
    """The request's lease key when this process now holds its lease and its claim, else None."""
    key = job.leases.key(request)
    if not job.leases.try_take(key):
        return None  # another live process is producing it
    with postgres.session(job.dsn) as connection:
        if postgres.claim(connection, job.table, request):
            return key
    job.leases.release(key)
    return None


def produce_group(group: list[JobRequest], job: ExhaustRun) -> None:
    """Produces the first of a group of duplicate requests; all of them get its outcome."""
    taken: list[tuple[JobRequest, int]] = []
    try:
        taken += [(request, key) for request in group if (key := _take(request, job)) is not None]
        if not taken:
            return
        started = time.monotonic()
        claimed = [request for request, _ in taken]
        leader = claimed[0]
        destination, message, final = _outcome(leader, job)
        completed, elapsed = _utcnow(), int((time.monotonic() - started) * 1000)
        with postgres.session(job.dsn) as connection:
            for request in claimed:
                if destination:
                    postgres.mark_success(connection, job.table, request, [destination], completed, completed,
                                          elapsed)
                else:
                    postgres.mark_failed(connection, job.table, request, job_requests.err_message(message),
                                         completed, elapsed, final=final)
        duplicates = f" (and {len(claimed) - 1} duplicate(s))" if len(claimed) > 1 else ""
        _LOG.info("request %s%s: %s in %d ms%s", leader.request_id, duplicates,
                  "SUCCESS" if destination else "FAILED", elapsed, f": {message}" if message else "")
    finally:
        for _, key in taken:
            job.leases.release(key)


def remove_dead_staging(staging: str, leases: postgres.Leases) -> int:
    """Removes the staging folders of requests whose producing process died (their lease is free)."""
    removed = 0
    for name in files.list_dirs(staging):
        key = lease_of_workspace(name)
        if key is None or not leases.try_take(key):
            continue
        try:
            files.remove_dir(FileSystems.join(staging, name))
            removed += 1
        finally:
            leases.release(key)
    return removed


def reclaim_interrupted(job: ExhaustRun, request_id: str | None) -> None:
    """PROCESSING requests whose lease is free were left by a process that died: FAILED "interrupted",
    iteration + 1, so they are pending again (or final at the iteration limit)."""
    with postgres.session(job.dsn) as connection:
        for request in postgres.processing_requests(connection, job.table, JOB_ID, request_id):
            key = job.leases.key(request)
            if not job.leases.try_take(key):
                continue  # its process is alive
            try:
                if postgres.reclaim(connection, job.table, request, _utcnow()):
                    _LOG.warning("request %s: interrupted (its exhaust process died); iteration %d",
                                 request.request_id, request.iteration + 1)
            finally:
                job.leases.release(key)


# --- Commands -----------------------------------------------------------------------------------------

def workers_share_this_machine(options: PipelineOptions) -> bool:
    """Whether the pipeline's workers run in this process (LOOPBACK, the in-process runner), so a local
    staging folder is theirs too."""
    environment = options.view_as(PortableOptions).environment_type
    return environment in (None, "LOOPBACK") or options.view_as(StandardOptions).runner.endswith("FnApiRunner")


def staging_location(path: str | None, output: str) -> str:
    """Where a report waits (sorted shards, then the merged file) until it is published: private, never
    under the published output. A local output needs local staging on the same filesystem, so that the
    report is moved into place with a rename. By default: a folder only this user can read in the temp
    dir, or beside the output when the temp dir is on another filesystem."""
    if path:
        return path
    user = f"programusers-staging-{os.getuid()}"
    local = os.path.join(tempfile.gettempdir(), user)
    files.make_private_dir(local)
    if "://" in output or files.same_local_filesystem(local, output):
        return local
    beside = os.path.join(os.path.dirname(os.path.abspath(output)), "." + user)
    files.make_private_dir(beside)
    return beside


class CannotRun(Exception):
    """The exhaust cannot start (configuration, runner, stores it must reach)."""


def _prepare(args) -> tuple[ExhaustRun, str | None]:
    config = load_model_config(args.config) if args.config else default_model_config()
    cipher = PlatformCipher.from_env()
    # ExhaustOptions' flags were parsed with the subcommand's (for --help); hand them on.
    tuning = {name: getattr(args, name) for name in ExhaustOptions([]).get_all_options(current_only=True)}
    options = runners.pipeline_options(args.runner, args.pipeline_args, **tuning)
    if not args.staging and not workers_share_this_machine(options):
        raise CannotRun("the pipeline's workers run elsewhere: pass --staging with a location they share "
                        "(e.g. a private bucket); the default staging folder is on this machine only")
    output = args.output or config.output_path
    FileSystems.set_options(options)
    if "://" not in output:
        os.makedirs(os.path.join(output, JOB_ID), exist_ok=True)
    staging = staging_location(args.staging, output)
    if "://" not in staging:
        files.make_private_dir(staging)
        if "://" not in output and not files.same_local_filesystem(staging, output):
            raise CannotRun("--staging must be on the same filesystem as --output, so that a report is "
                            "moved into place whole")
    leases = postgres.Leases(args.postgres_dsn, JOB_ID)
    return ExhaustRun(config, Stores.resolve(args, config), options, output, staging, cipher, args.zip_crypto,
                      args.postgres_dsn, args.job_request_table, leases, args.file_mode, args.max_store_outage,
                      args.min_profile_share), args.request_id


def _exhaust(args) -> int:
    try:
        job, request_id = _prepare(args)
    except (CannotRun, ModelConfigError, runners.RunnerUnavailable, RuntimeError, ValueError, OSError,
            psycopg2.Error) as exc:
        _LOG.error("exhaust cannot run: %s", exc)
        return 2
    with job.leases:
        try:
            if removed := remove_dead_staging(job.staging, job.leases):
                _LOG.warning("removed the staging of %d report(s) whose exhaust died", removed)
            reclaim_interrupted(job, request_id)
            with postgres.session(job.dsn) as connection:
                pending = postgres.pending_requests(connection, job.table, JOB_ID, request_id)
        except psycopg2.Error as exc:
            _LOG.error("exhaust cannot run: job_request is unreachable (%s)", type(exc).__name__)
            return 2
        if request_id and not pending:
            _LOG.error("request %s is not pending (see `programusers status`)", request_id)
            return 1
        _LOG.info("%d pending request(s) on %s", len(pending), args.runner)
        for group in job_requests.group_duplicates(pending):
            try:
                produce_group(group, job)
            except psycopg2.Error as exc:  # job_request unreachable now: the other groups may still go through
                _LOG.error("request %s: could not record its status (%s)", group[0].request_id, type(exc).__name__)
    return 0


ENCRYPTION_KEY_ENV = "PROGRAMUSERS_ENCRYPTION_KEY"


def read_encryption_key(path: str | None) -> str | None:
    """The zip password from a file (`-`: standard input), else the environment; never from argv."""
    if path == "-":
        text = sys.stdin.read()
    elif path:
        text = Path(path).read_text("utf-8")
    else:
        return os.environ.get(ENCRYPTION_KEY_ENV) or None
    return text.rstrip("\r\n") or None


def _submit(args) -> int:
    if args.encryption_key is not None:
        _LOG.error("not submitted: --encryption-key would leave the password in the process list and shell "
                   "history; pass --encryption-key-file PATH (- for standard input) or set %s", ENCRYPTION_KEY_ENV)
        return 2
    try:
        config = load_model_config(args.config) if args.config else default_model_config()
        key = read_encryption_key(args.encryption_key_file)
    except (ModelConfigError, OSError) as exc:
        _LOG.error("not submitted: %s", exc)
        return 2
    if not key and config.requires_encryption_key:
        _LOG.error("not submitted: this report needs a zip password: --encryption-key-file PATH (- for "
                   "standard input) or %s", ENCRYPTION_KEY_ENV)
        return 2
    data = job_requests.request_data(args.program_id, args.filter or [])
    try:
        filters.parse_request(data)
    except filters.RequestError as exc:
        _LOG.error("not submitted: %s", exc)
        return 2
    request = JobRequest(tag=job_requests.tag_for(args.program_id, args.channel),
                         request_id=job_requests.new_request_id(), request_data=data, requested_by=args.requested_by,
                         requested_channel=args.channel, encryption_key=key)
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


def _file_mode(text: str) -> int:
    mode = int(text, 8)
    if not 0o400 <= mode <= 0o666:
        raise argparse.ArgumentTypeError("an octal mode from 400 to 666, e.g. 600 or 640")
    return mode


def register(commands) -> None:
    submit = commands.add_parser("submit", help="submit a program user report request; prints its request_id")
    submit.add_argument("--program-id", required=True)
    submit.add_argument("--filter", nargs=3, action="append", metavar=("NAME", "OP", "VALUE"),
                        help="e.g. \"user_locations['district_id']\" = ID; for 'in' VALUE is comma-separated; "
                             "prefix user_consent. for the consent table (user_consent.user_id)")
    submit.add_argument("--requested-by", required=True)
    submit.add_argument("--channel", help="requested_channel; the tag is PROGRAM_ID:CHANNEL")
    submit.add_argument("--encryption-key-file", metavar="PATH",
                        help=f"file holding the zip password (plain, or encrypted with the platform salt); - reads "
                             f"standard input; default: ${ENCRYPTION_KEY_ENV}")
    submit.add_argument("--encryption-key", help=argparse.SUPPRESS)  # refused: see _submit
    submit.add_argument("--config", help="model config JSON (default: the packaged one)")
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
    exhaust.add_argument("--staging", help="private Beam path where a report waits until it is whole (it holds "
                                           "decrypted PII); required when the workers run elsewhere; default: a "
                                           "folder only this user can read, on the output's filesystem")
    exhaust.add_argument("--file-mode", type=_file_mode, default=0o600,
                         help="octal mode of published local reports (default 600: the owner only)")
    exhaust.add_argument("--max-store-outage", type=float, default=120.0, metavar="SECONDS",
                         help="how long a request waits in all for Cassandra or Redis to answer again before "
                              "it fails (retried by a later run)")
    exhaust.add_argument("--min-profile-share", type=float, default=0.0, metavar="SHARE",
                         help="fail a PII request when the share of its consenting users found in the user "
                              "cache is at or below this (default 0: when none is found; -1: never)")
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
