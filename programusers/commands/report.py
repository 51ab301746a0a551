"""`programusers submit`, `status` and `exhaust`: report requests from the command line.

`submit` records a request, `exhaust` produces every pending one (a Beam batch pipeline per request,
duplicates once; see lifecycle.py), `status` shows where a request stands (never PII).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from programusers import commands, filters, runners, settings
from programusers.crypto import PlatformCipher
from programusers.model_config import ModelConfigError, ReportConfig, default_model_config, load_model_config
from programusers.options import from_args, keyspace_flags, option_values
from programusers.pipelines.exhaust import ExhaustOptions, ReportSources
from programusers.report import job_request, lifecycle
from programusers.report.job_request import JobRequest
from programusers.report.lifecycle import ExhaustRun
from programusers.report.request_store import RequestStore
from programusers.report.staging import Staging

_LOG = logging.getLogger(__name__)


def report_sources(args: argparse.Namespace, config: ReportConfig) -> ReportSources:
    """Where the report reads from: the stores' connections (flag > environment > local stack), the
    keyspaces (flag > environment > the programs keyspace's fallback, the model config's keyspace_name) and
    the user cache's db (flag > environment > the model config's sparkUserDbRedisIndex)."""
    stores = from_args(args)
    return ReportSources(cassandra=stores.cassandra_connection(),
                         programs_keyspace=args.programs_keyspace or config.keyspace,
                         consent_keyspace=args.consent_keyspace,
                         redis=stores.redis_connection(default_db=config.redis_db))


def exhaust_options(args: argparse.Namespace) -> PipelineOptions:
    """The report pipeline's options: its tuning and Beam's flags only. The store flags (a Kafka property
    may be a SASL secret) stay in this process, which hands the pipeline its sources."""
    return runners.pipeline_options(args.runner, args.pipeline_args, **option_values(args, ExhaustOptions))


def _prepare(args: argparse.Namespace) -> ExhaustRun:
    config = load_model_config(args.config) if args.config else default_model_config()
    cipher = PlatformCipher.from_env()
    options = exhaust_options(args)
    FileSystems.set_options(options)
    staging = Staging.prepare(args.staging, args.output or config.output_path, options, file_mode=args.file_mode)
    sources = report_sources(args, config)
    # The model config's endpoints are the platform's Spark job's: say once that they are not ours.
    _LOG.info("the model config's Redis %s:%s and Cassandra %s are not used: the exhaust reads Cassandra at %s "
              "and Redis at %s (flags, environment, local stack)", config.redis_host, config.redis_port,
              config.cassandra_host, sources.cassandra.describe(), sources.redis.describe())
    return ExhaustRun(config=config, sources=sources, options=options, staging=staging,
                      request_store=RequestStore(args.postgres_dsn, args.job_request_table, leases=True), cipher=cipher,
                      zip_crypto=args.zip_crypto, max_store_outage=args.max_store_outage,
                      min_profile_share=args.min_profile_share, progress_every=args.progress_every)


def _exhaust(args) -> int:
    try:
        job = _prepare(args)
    except (ModelConfigError, runners.RunnerUnavailable, RuntimeError, ValueError, OSError, psycopg2.Error) as exc:
        _LOG.error("exhaust cannot run: %s", exc)
        return 2
    _LOG.info("exhaust on %s", args.runner)
    with job.request_store:
        try:
            lifecycle.produce_pending(job, args.request_id)
        except lifecycle.Unreachable as exc:
            _LOG.error("exhaust cannot run: %s", exc)
            return 2
        except lifecycle.NotPending as exc:
            _LOG.error("%s", exc)
            return 1
        except runners.Stopped:
            return 1
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
    data = job_request.request_data(args.program_id, args.filter or [])
    try:
        filters.parse_request(data)
    except filters.RequestError as exc:
        _LOG.error("not submitted: %s", exc)
        return 2
    request = JobRequest(tag=job_request.tag_for(args.program_id, args.channel),
                         request_id=job_request.new_request_id(), request_data=data, requested_by=args.requested_by,
                         requested_channel=args.channel, encryption_key=key)
    if column := request.too_long():
        _LOG.error("not submitted: %s is longer than %s allows", column, args.job_request_table)
        return 2
    try:
        RequestStore(args.postgres_dsn, args.job_request_table).insert(request)
    except psycopg2.Error as exc:
        _LOG.error("not submitted: %s is unreachable (%s)", args.job_request_table, type(exc).__name__)
        return 2
    print(request.request_id)
    return 0


def _shown(value) -> str:
    if value is None:
        return ""
    return ", ".join(value) if isinstance(value, list) else str(value)


def _status(args) -> int:
    rows = RequestStore(args.postgres_dsn, args.job_request_table).status(args.request_id)
    if not rows:
        print(f"no report request with id {args.request_id} in {args.job_request_table}", file=sys.stderr)
        return 1
    print("\n\n".join("\n".join(f"{name}: {_shown(value)}" for name, value in row.items()) for row in rows))
    return 0


def job_request_flags(parser: argparse.ArgumentParser) -> None:
    """Where the report requests are: the PostgreSQL DSN and the job_request table (flag > environment)."""
    parser.add_argument("--postgres-dsn", default=settings.POSTGRES_DSN)
    parser.add_argument("--job-request-table", default=settings.JOB_REQUEST_TABLE,
                        help=f"default: ${settings.variable('JOB_REQUEST_TABLE')}, else "
                             + settings.default("JOB_REQUEST_TABLE"))


def _file_mode(text: str) -> int:
    mode = int(text, 8)
    if not 0o400 <= mode <= 0o666:
        raise argparse.ArgumentTypeError("an octal mode from 400 to 666, e.g. 600 or 640")
    return mode


def register(subcommands) -> None:
    submit = subcommands.add_parser("submit", help="submit a program user report request; prints its request_id")
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
    job_request_flags(submit)
    submit.set_defaults(handler=_submit)

    status = subcommands.add_parser("status", help="show a report request's status (no PII)")
    status.add_argument("request_id")
    job_request_flags(status)
    status.set_defaults(handler=_status)

    exhaust = commands.add_pipeline_command(
        subcommands, "exhaust", handler=_exhaust, default_runner="DirectRunner", option_classes=(ExhaustOptions,),
        help="produce every pending report request (or one)")
    exhaust.add_argument("--request-id", help="only this request")
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
    exhaust.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                         help="how often a running request logs how far it got (counts only)")
    exhaust.add_argument("--zip-crypto", action="store_true",
                         help="encrypt zips with legacy ZipCrypto instead of AES-256, for old unzip tools")
    keyspace_flags(exhaust, programs_fallback="the model config's keyspace_name")
    job_request_flags(exhaust)
