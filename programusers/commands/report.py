"""`programusers submit`, `status` and `exhaust`: report requests from the command line.

`submit` records a request, `exhaust` produces every pending one (a Beam batch pipeline per request,
duplicates once; see lifecycle.py), `status` shows where a request stands (never PII).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from programusers import filters, runners, schema, settings
from programusers.crypto import PlatformCipher
from programusers.io import files, postgres
from programusers.model_config import ModelConfigError, default_model_config, load_model_config
from programusers.options import keyspace_flags, option_values, store_flags
from programusers.pipelines.exhaust import ExhaustOptions, ReportSources
from programusers.report import job_request, lifecycle, request_store
from programusers.report.job_request import JOB_ID, JobRequest
from programusers.report.lifecycle import ExhaustRun, utcnow

_LOG = logging.getLogger(__name__)


def workers_share_this_machine(options: PipelineOptions) -> bool:
    """Whether the pipeline's workers run in this process (LOOPBACK, the in-process runner), so a local
    staging folder is theirs too."""
    environment = options.view_as(PortableOptions).environment_type
    return environment in (None, "LOOPBACK") or options.view_as(StandardOptions).runner.endswith("FnApiRunner")


class CannotRun(Exception):
    """The exhaust cannot start (configuration, runner, stores it must reach)."""


def staging_location(path: str | None, output: str) -> str:
    """Where a report waits (sorted shards, then the merged file) until it is published: private, never
    under the published output. A local output needs local staging on the same filesystem, so that the
    report is moved into place with a rename. By default: a folder only this user can read in the temp
    dir, or beside the output when the temp dir is on another filesystem."""
    if path:
        if files.is_local(path):
            files.make_private_dir(path)
        if files.is_local(output) and not (files.is_local(path) and files.same_local_filesystem(path, output)):
            raise CannotRun("--staging must be on the same filesystem as --output, so that a report is "
                            "moved into place whole")
        return path
    user = f"programusers-staging-{os.getuid()}"
    local = os.path.join(tempfile.gettempdir(), user)
    files.make_private_dir(local)
    if not files.is_local(output) or files.same_local_filesystem(local, output):
        return local
    beside = os.path.join(os.path.dirname(os.path.abspath(output)), "." + user)
    files.make_private_dir(beside)
    return beside


def _prepare(args) -> tuple[ExhaustRun, str | None]:
    config = load_model_config(args.config) if args.config else default_model_config()
    cipher = PlatformCipher.from_env()
    options = runners.pipeline_options(args.runner, args.pipeline_args, **option_values(args, ExhaustOptions))
    if not args.staging and not workers_share_this_machine(options):
        raise CannotRun("the pipeline's workers run elsewhere: pass --staging with a location they share "
                        "(e.g. a private bucket); the default staging folder is on this machine only")
    output = args.output or config.output_path
    FileSystems.set_options(options)
    if files.is_local(output):
        os.makedirs(os.path.join(output, JOB_ID), exist_ok=True)
    staging = staging_location(args.staging, output)
    leases = request_store.Leases(args.postgres_dsn, JOB_ID)
    stores = ReportSources.resolve(args, config)
    # The model config's endpoints are the platform's Spark job's: say once that they are not ours.
    _LOG.info("the model config's Redis %s:%s and Cassandra %s are not used: the exhaust reads Cassandra at %s "
              "and Redis at %s (flags, environment, local stack)", config.redis_host, config.redis_port,
              config.cassandra_host, stores.cassandra.describe(), stores.redis.describe())
    return ExhaustRun(config=config, stores=stores, options=options, output=output, staging=staging,
                      cipher=cipher, zip_crypto=args.zip_crypto, dsn=args.postgres_dsn,
                      table=args.job_request_table, leases=leases, file_mode=args.file_mode,
                      max_store_outage=args.max_store_outage, min_profile_share=args.min_profile_share,
                      progress_every=args.progress_every), args.request_id


def _exhaust(args) -> int:
    try:
        job, request_id = _prepare(args)
    except (CannotRun, ModelConfigError, runners.RunnerUnavailable, RuntimeError, ValueError, OSError,
            psycopg2.Error) as exc:
        _LOG.error("exhaust cannot run: %s", exc)
        return 2
    _LOG.info("exhaust on %s", args.runner)
    with job.leases:
        try:
            lifecycle.produce_pending(job, request_id)
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
        _LOG.error("not submitted: %s is longer than job_request allows", column)
        return 2
    try:
        with postgres.session(args.postgres_dsn) as connection:
            request_store.insert_request(connection, args.job_request_table, request, JOB_ID, utcnow())
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
        rows = request_store.request_status(connection, args.job_request_table, args.request_id)
    if not rows:
        print(f"no report request with id {args.request_id} in {args.job_request_table}", file=sys.stderr)
        return 1
    print("\n\n".join("\n".join(f"{name}: {_shown(value)}" for name, value in row.items()) for row in rows))
    return 0


def job_request_flags(parser: argparse.ArgumentParser) -> None:
    """Where the report requests are: the PostgreSQL DSN and the job_request table (flag > environment)."""
    parser.add_argument("--postgres-dsn", default=settings.POSTGRES_DSN)
    parser.add_argument("--job-request-table",
                        default=settings.env("PROGRAMUSERS_JOB_REQUEST_TABLE", schema.JOB_REQUEST_TABLE))


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
    job_request_flags(submit)
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="show a report request's status (no PII)")
    status.add_argument("request_id")
    job_request_flags(status)
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
    exhaust.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                         help="how often a running request logs how far it got (counts only)")
    exhaust.add_argument("--zip-crypto", action="store_true",
                         help="encrypt zips with legacy ZipCrypto instead of AES-256, for old unzip tools")
    keyspace_flags(exhaust, programs_fallback="the model config's keyspace_name")
    store_flags(exhaust)
    job_request_flags(exhaust)
    ExhaustOptions._add_argparse_args(exhaust.add_argument_group("pipeline options"))
    exhaust.set_defaults(handler=_exhaust)
