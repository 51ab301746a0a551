"""The exhaust's request lifecycle (SPEC §3, §5): claim a pending job_request under a lease, produce its
report through store outages, publish it only complete, record the outcome.

Leases are session-level PostgreSQL advisory locks (see request_store.py): a PROCESSING request whose lease
is free was left by a process that died and is reclaimed; so are the staging folders such processes left.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from programusers import filters, runners, store_errors
from programusers.crypto import PlatformCipher
from programusers.io import cassandra, files, postgres, redis
from programusers.metrics import counters
from programusers.model_config import ReportConfig
from programusers.pipelines.exhaust import ReportSources, program_asks, run
from programusers.report import job_request, progress, request_store, shards
from programusers.report.archive import zip_password
from programusers.report.job_request import JOB_ID, JobRequest
from programusers.store_errors import Kind, Store, StoreProblem

_LOG = logging.getLogger(__name__)


class ReportFailure(Exception):
    """A request that cannot be produced now but may be later (iteration + 1); the message is safe for
    err_message (no PII)."""


NO_PROFILES = "the user cache has no profile for any consenting user"
MAX_PIPELINE_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class ExhaustRun:
    """What every request of one `programusers exhaust` run shares."""
    config: ReportConfig
    stores: ReportSources
    options: PipelineOptions
    output: str
    staging: str
    cipher: PlatformCipher
    zip_crypto: bool
    dsn: str
    table: str
    leases: request_store.Leases
    file_mode: int = 0o600
    max_store_outage: float = 120.0
    min_profile_share: float = 0.0
    progress_every: float = 30.0


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # job_request's timestamps are UTC, zoneless


def _problem(stores: ReportSources, store: Store) -> StoreProblem | None:
    """None when `store` (Cassandra or Redis) answers and lets us in, else what is wrong with it."""
    try:
        stores.cassandra.ping() if store is Store.CASSANDRA else stores.redis.ping()
        return None
    except (*cassandra.Unavailable, redis.Unavailable) as error:
        return store_errors.classify(error) or StoreProblem(store, Kind.UNREACHABLE)


def _await_store(stores: ReportSources, store: Store, deadline: float, request_id: str) -> None:
    """Returns once `store` answers; raises ReportFailure naming it when it is still down at `deadline`,
    or at once when it refuses our login (waiting would not change that)."""
    delay = 1.0
    while problem := _problem(stores, store):
        if problem.kind is Kind.REFUSED or time.monotonic() + delay > deadline:
            raise ReportFailure(str(problem))
        _LOG.warning("request %s: %s; trying again in %.0fs", request_id, problem, delay)
        time.sleep(delay)
        delay = min(delay * 2, 15.0)


def _store_behind(stores: ReportSources, reads_cache: bool) -> Store | None:
    """The store a failed pipeline could not use, if any. Redis is suspected only when the report reads
    the cache (a program without PII consent never does, so its outage is no excuse)."""
    if _problem(stores, Store.CASSANDRA):
        return Store.CASSANDRA
    return Store.REDIS if reads_cache and _problem(stores, Store.REDIS) else None


def _run_through_outages(request: JobRequest, report: filters.ReportRequest, job: ExhaustRun,
                         staging_dir: str) -> dict[str, int]:
    """Runs the pipeline, waiting for a store that is down (up to --max-store-outage in all) and running
    it again after one failed it; returns its counters."""
    deadline, store, attempt = time.monotonic() + job.max_store_outage, Store.CASSANDRA, 1
    asks = None  # whether the program asks for consent, so the report reads the user cache
    while True:
        _await_store(job.stores, store, deadline, request.request_id)
        try:
            if asks is None:
                asks = program_asks(report, job.stores, job.options)
            with progress.shown(f"request {request.request_id}", job.progress_every, staging_dir=staging_dir):
                return counters(run(job.options, request=report, config=job.config, stores=job.stores,
                                    staging_dir=staging_dir, program_asks=asks))
        except Exception:
            store = _store_behind(job.stores, reads_cache=bool(asks))
            if store is None:
                raise
            if attempt == MAX_PIPELINE_ATTEMPTS:
                raise ReportFailure(str(_problem(job.stores, store) or StoreProblem(store, Kind.UNREACHABLE))) from None
        _LOG.warning("request %s: the pipeline failed while %s was unavailable; running it again once it answers",
                     request.request_id, store)
        files.remove_dir(staging_dir)
        files.make_private_dir(staging_dir)
        attempt += 1


def _check_profiles(totals: dict[str, int], min_share: float) -> None:
    """A cache that answers but lacks the consenting users' profiles (e.g. restarted empty) would publish
    blank personal columns: fail the request instead, so a later run can produce it right."""
    found = totals.get("profiles_found", 0)
    consenting = found + totals.get("profile_missing", 0)
    if consenting and found / consenting <= min_share:
        raise ReportFailure(NO_PROFILES if not found else
                            f"the user cache has a profile for only {found} of {consenting} consenting users")


_STAGING_DIR = re.compile(r"([0-9a-f]{16})-[0-9a-f]{32}")


def staging_dir_name(lease_key: int) -> str:
    """A request's staging folder, named after its lease so that a later run can tell whether the process
    that made it is alive."""
    return f"{lease_key & (2**64 - 1):016x}-{uuid.uuid4().hex}"


def lease_of_staging_dir(name: str) -> int | None:
    """The lease key in a staging folder's name; None for a name of another shape."""
    if not (match := _STAGING_DIR.fullmatch(name)):
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
    now = datetime.now(UTC)
    name = job_request.report_name(request.request_id, now, job.config.tz) + (".zip" if password else ".csv")
    destination = FileSystems.join(job.output, JOB_ID, name)
    # Shards and the merged file hold decrypted PII: they stay in private staging until the file is whole.
    staging_dir = FileSystems.join(job.staging, staging_dir_name(job.leases.key(request)))
    files.make_private_dir(staging_dir)
    try:
        totals = _run_through_outages(request, report, job, staging_dir)
        _LOG.info("request %s: %s", request.request_id, json.dumps(totals, sort_keys=True))
        records_built = totals.get("records", 0)
        if not records_built:
            raise ReportFailure(job_request.NO_DATA_FOUND)
        _check_profiles(totals, job.min_profile_share)
        merged = FileSystems.join(staging_dir, name)
        try:
            rows = shards.merge_shards(staging_dir, merged, now.astimezone(job.config.tz), password,
                                      member=name.rsplit(".", 1)[0] + ".csv", zip_crypto=job.zip_crypto)
        except shards.IncompleteShard as exc:
            raise ReportFailure(f"report incomplete: shard {exc}; nothing published") from None
        if rows != records_built:
            raise ReportFailure(f"report incomplete: {rows} of {records_built} rows reached the merge "
                                "(is --staging shared with the workers?); nothing published")
        if not job.leases.held():  # another run may have reclaimed the request meanwhile
            raise ReportFailure("lost the request's lease (PostgreSQL session ended); nothing published")
        files.publish(merged, destination, job.file_mode)
    finally:
        files.remove_dir(staging_dir)
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
        if request_store.claim(connection, job.table, request):
            return key
    job.leases.release(key)
    return None


def _produce_group(group: list[JobRequest], job: ExhaustRun) -> None:
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
        completed, elapsed = utcnow(), int((time.monotonic() - started) * 1000)
        with postgres.session(job.dsn) as connection:
            for request in claimed:
                if destination:
                    request_store.mark_success(connection, job.table, request, [destination], completed, completed,
                                          elapsed)
                else:
                    request_store.mark_failed(connection, job.table, request, job_request.err_message(message),
                                         completed, elapsed, final=final)
        duplicates = f" (and {len(claimed) - 1} duplicate(s))" if len(claimed) > 1 else ""
        _LOG.info("request %s%s: %s in %d ms%s", leader.request_id, duplicates,
                  "SUCCESS" if destination else "FAILED", elapsed, f": {message}" if message else "")
    finally:
        for _, key in taken:
            job.leases.release(key)


def _remove_dead_staging(staging: str, leases: request_store.Leases) -> int:
    """Removes the staging folders of requests whose producing process died (their lease is free)."""
    removed = 0
    for name in files.list_dirs(staging):
        if (key := lease_of_staging_dir(name)) is None:
            continue
        with leases.if_free(key) as dead:
            if dead:
                files.remove_dir(FileSystems.join(staging, name))
                removed += 1
    return removed


def _reclaim_interrupted(job: ExhaustRun, request_id: str | None) -> None:
    """PROCESSING requests whose lease is free were left by a process that died: FAILED "interrupted",
    iteration + 1, so they are pending again (or final at the iteration limit)."""
    with postgres.session(job.dsn) as connection:
        for request in request_store.processing_requests(connection, job.table, JOB_ID, request_id):
            with job.leases.if_free(job.leases.key(request)) as dead:  # else its process is alive
                if dead and request_store.reclaim(connection, job.table, request, utcnow()):
                    _LOG.warning("request %s: interrupted (its exhaust process died); iteration %d",
                                 request.request_id, request.iteration + 1)


class NotPending(Exception):
    """The request asked for is not pending (see `programusers status`)."""


class Unreachable(Exception):
    """job_request could not be read before any request was taken."""


def produce_pending(job: ExhaustRun, request_id: str | None = None) -> None:
    """The exhaust's one pass: removes the staging of runs that died and reclaims their requests, then
    produces every pending request (or the one `request_id` names), duplicates together, oldest first,
    recording each outcome. Raises Unreachable when job_request cannot be read at the start, NotPending
    when `request_id` names no pending request, runners.Stopped when Ctrl-C or SIGTERM stopped a pipeline
    (its request is reclaimed by a later run)."""
    try:
        if removed := _remove_dead_staging(job.staging, job.leases):
            _LOG.warning("removed the staging of %d report(s) whose exhaust died", removed)
        _reclaim_interrupted(job, request_id)
        with postgres.session(job.dsn) as connection:
            pending = request_store.pending_requests(connection, job.table, JOB_ID, request_id)
    except psycopg2.Error as exc:
        raise Unreachable(f"job_request is unreachable ({type(exc).__name__})") from None
    if request_id and not pending:
        raise NotPending(f"request {request_id} is not pending (see `programusers status`)")
    _LOG.info("%d pending request(s)", len(pending))
    for group in job_request.group_duplicates(pending):
        try:
            _produce_group(group, job)
        except psycopg2.Error as exc:  # job_request unreachable now: the other groups may still go through
            _LOG.error("request %s: could not record its status (%s)", group[0].request_id, type(exc).__name__)
        except runners.Stopped:
            _LOG.error("request %s: stopped (Ctrl-C or SIGTERM); it stays PROCESSING until a later run reclaims "
                       "it, nothing was published", group[0].request_id)
            raise
