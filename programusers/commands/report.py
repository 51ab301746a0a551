"""`programusers submit`, `status`, `exhaust` and `link`: report requests from the command line.

`submit` records a request, `exhaust` produces every pending one (a Beam batch pipeline per request,
duplicates once; see lifecycle.py), `status` shows where a request stands (never PII), `link` prints a
signed link to a finished report that expires.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from programusers import commands, filters, runners, settings
from programusers.crypto import PlatformCipher
from programusers.model_config import (
    STORES,
    ModelConfigError,
    ReportConfig,
    default_model_config,
    load_model_config,
)
from programusers.options import from_args, in_range, keyspace_flags, option_values
from programusers.pipelines.exhaust import ExhaustOptions, ExhaustSources
from programusers.report import job_request, lifecycle
from programusers.report.job_request import JobRequest
from programusers.report.lifecycle import ExhaustRun
from programusers.report.request_store import RequestStore
from programusers.report.staging import Staging
from programusers.report.store import DEFAULT_LINK_EXPIRY, ReportStore, StoreConfigError, StoreEndpoints, signed_link

_LOG = logging.getLogger(__name__)


def exhaust_sources(args: argparse.Namespace, config: ReportConfig) -> ExhaustSources:
    """Where the report reads from: the stores' connections (flag > environment > local stack), the
    keyspaces (flag > environment > the programs keyspace's fallback, the model config's keyspace_name) and
    the user cache's db (flag > environment > the model config's sparkUserDbRedisIndex)."""
    stores = from_args(args)
    return ExhaustSources(cassandra=stores.cassandra_connection(),
                         programs_keyspace=args.programs_keyspace or config.keyspace,
                         consent_keyspace=args.consent_keyspace,
                         redis=stores.redis_connection(default_db=config.redis_db))


def exhaust_options(args: argparse.Namespace) -> PipelineOptions:
    """The report pipeline's options: its tuning and Beam's flags only. The store flags (a Kafka property
    may be a SASL secret) stay in this process, which hands the pipeline its sources."""
    return runners.pipeline_options(args.runner, args.pipeline_args, **option_values(args, ExhaustOptions))


def _config(args: argparse.Namespace) -> ReportConfig:
    return load_model_config(args.config) if args.config else default_model_config()


def store_endpoints(args: argparse.Namespace) -> StoreEndpoints:
    return StoreEndpoints(azure=args.azure_blob_endpoint, s3=args.s3_endpoint)


def report_store(args: argparse.Namespace, config: ReportConfig) -> ReportStore:
    """Where reports go: the model config's store, overridden by --store, --container and --output."""
    return ReportStore.resolve(config, store=args.store, container=args.container,
                               output=getattr(args, "output", None), endpoints=store_endpoints(args))


def _prepare(args: argparse.Namespace) -> ExhaustRun:
    config = _config(args)
    cipher = PlatformCipher.from_env()
    store = report_store(args, config)
    store.export_credentials()
    options = exhaust_options(args)
    FileSystems.set_options(options)
    staging = Staging.prepare(args.staging, store, options, file_mode=args.file_mode)
    sources = exhaust_sources(args, config)
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
    _LOG.info("exhaust on %s, publishing to %s", args.runner, job.staging.store.describe())
    runners.collect_less()  # the collector's passes over the rows a report holds cost more than they free
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
        config = _config(args)
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


_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_LINK_EXPIRY = timedelta(days=7)  # the longest a service SAS signed with an account key should live


def _expiry(text: str) -> timedelta:
    if not (match := _DURATION.fullmatch(text.strip())) or not int(match[1]):
        raise argparse.ArgumentTypeError("a duration such as 30m, 90s, 2h or 1d")
    expiry = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if expiry > MAX_LINK_EXPIRY:
        raise argparse.ArgumentTypeError("at most 7d")
    return expiry


def _link(args) -> int:
    rows = [row for row in RequestStore(args.postgres_dsn, args.job_request_table).status(args.request_id)
            if row["status"] == "SUCCESS" and row["download_urls"]]
    if not rows:
        print(f"no finished report for request {args.request_id} (see `programusers status`)", file=sys.stderr)
        return 1
    try:
        config = _config(args)
        for location in rows[0]["download_urls"]:
            print(signed_link(location, config, expires_in=args.expires, endpoints=store_endpoints(args)))
    except (ModelConfigError, StoreConfigError, ValueError) as exc:
        print(f"no link: {exc}", file=sys.stderr)
        return 2
    return 0


def _azure_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="model config JSON (default: the packaged one)")
    parser.add_argument("--azure-blob-endpoint", default=settings.AZURE_BLOB_ENDPOINT, metavar="URL",
                        help="the Azure blob service, e.g. Azurite's (default: $"
                             f"{settings.variable('AZURE_BLOB_ENDPOINT')}, else the public cloud's)")
    parser.add_argument("--s3-endpoint", default=settings.S3_ENDPOINT, metavar="URL",
                        help=f"an S3-compatible store's API, e.g. http://127.0.0.1:8333 (default: "
                             f"${settings.variable('S3_ENDPOINT')}, else AWS's)")


def store_flags(parser: argparse.ArgumentParser) -> None:
    """Where reports are stored: flags over the model config's store settings (secrets: environment only)."""
    _azure_flags(parser)
    parser.add_argument("--store", choices=STORES, help="where reports are published (default: the model config's "
                                                        "store)")
    parser.add_argument("--container", help="the container or bucket (default: the model config's)")


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
    submit.add_argument("--config", help="model config JSON (default: the packaged one)")  # its key rule
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
    store_flags(exhaust)
    exhaust.add_argument("--output", help="where reports go, as a whole Beam path: a local folder or azfs://account/"
                                          "container/prefix (default: from the store settings)")
    exhaust.add_argument("--staging", help="Beam path where a report's sealed shards wait until it is whole; "
                                           "required when the workers run elsewhere (e.g. azfs://...); default: "
                                           "a folder only this user can read, on this machine")
    exhaust.add_argument("--file-mode", type=_file_mode, default=0o600,
                         help="octal mode of published local reports (default 600: the owner only)")
    exhaust.add_argument("--max-store-outage", type=in_range(0, kind=float), default=120.0, metavar="SECONDS",
                         help="how long a request waits in all for Cassandra or Redis to answer again before "
                              "it fails (retried by a later run)")
    exhaust.add_argument("--min-profile-share", type=in_range(-1, 1, kind=float), default=0.0, metavar="SHARE",
                         help="fail a PII request when the share of its consenting users found in the user "
                              "cache is at or below this (default 0: when none is found; -1: never)")
    exhaust.add_argument("--progress-every", type=in_range(0, kind=float), default=30.0, metavar="SECONDS",
                         help="how often a running request logs how far it got (counts only)")
    exhaust.add_argument("--zip-crypto", action="store_true",
                         help="encrypt zips with legacy ZipCrypto instead of AES-256, for old unzip tools")
    keyspace_flags(exhaust, programs_fallback="the model config's keyspace_name")
    job_request_flags(exhaust)

    link = subcommands.add_parser("link", help="print a read-only link to a finished report that expires")
    link.add_argument("request_id")
    link.add_argument("--expires", type=_expiry, default=DEFAULT_LINK_EXPIRY, metavar="DURATION",
                      help="how long the link opens the report, e.g. 30m (the default), 2h, 1d (at most 7d)")
    _azure_flags(link)
    job_request_flags(link)
    link.set_defaults(handler=_link)
