"""The exhaust's request lifecycle (SPEC §3, §5), top to bottom: claim a pending request under a lease,
produce its report (the pipeline, through store outages), publish it only complete, record the outcome.

The modules a request goes through, in this order: request_store (claim), staging (the request's private
folder), pipelines/exhaust (the report rows as sorted shards), merge (one file, zipped by archive), staging
(publish, once request_store says the lease is still ours), request_store (the outcome). A pipeline that
a store outage failed is run again in an emptied folder.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import psycopg2
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from programusers import filters, runners, store_errors
from programusers.crypto import PlatformCipher
from programusers.io import cassandra, redis
from programusers.io.backoff import Backoff, retry
from programusers.metrics import counters
from programusers.model_config import ReportConfig
from programusers.pipelines import exhaust
from programusers.pipelines.exhaust import ExhaustSources
from programusers.report import job_request, merge, progress
from programusers.report.archive import PasswordZip, zip_password
from programusers.report.job_request import JobRequest
from programusers.report.request_store import RequestStore, lease_key, utcnow
from programusers.report.staging import Staging
from programusers.report.store import UNAVAILABLE, StoreMissing, StoreRefused
from programusers.sealing import RunKey
from programusers.store_errors import Kind, Store, StoreProblem
from programusers.transforms.shards import IncompleteShard

_LOG = logging.getLogger(__name__)


class ReportFailure(Exception):
    """A request that cannot be produced now but may be later (iteration + 1); the message is safe for
    err_message (no PII)."""


NO_PROFILES = "the user cache has no profile for any consenting user"
MAX_PIPELINE_ATTEMPTS = 3
STORE_BACKOFF = Backoff(base=2.0, cap=15.0)  # waits of 1-2 s, 2-4 s, ... 7.5-15 s for a store to answer


@dataclass(frozen=True, kw_only=True)
class ExhaustRun:
    """What every request of one `programusers exhaust` run shares (the command's flags decide each)."""
    config: ReportConfig
    sources: ExhaustSources
    options: PipelineOptions
    staging: Staging
    request_store: RequestStore
    cipher: PlatformCipher
    zip_crypto: bool
    max_store_outage: float
    min_profile_share: float
    progress_every: float


def _problem(sources: ExhaustSources, store: Store) -> StoreProblem | None:
    """None when `store` (Cassandra or Redis) answers and lets us in, else what is wrong with it."""
    try:
        sources.cassandra.ping() if store is Store.CASSANDRA else sources.redis.ping()
        return None
    except (*cassandra.Unavailable, *redis.Unavailable) as error:
        return store_errors.classify(error) or StoreProblem(store, Kind.UNREACHABLE)


class _StoreDown(Exception):
    """`problem`: the store does not answer, or refuses us (raised for retry(), caught in _await_store)."""

    def __init__(self, problem: StoreProblem):
        super().__init__(str(problem))
        self.problem = problem


def _retry_until(deadline: float, request_id: str, call, retry_if, problem):
    """`call()` retried with STORE_BACKOFF while `retry_if(error)`, until `deadline` (time.monotonic()); each
    wait is logged with `problem(error)`, why the request waits. Raises the last error when the next wait
    would pass `deadline`."""
    def say_why(error: Exception, seconds: float) -> None:
        _LOG.warning("request %s: %s; trying again in %.0fs", request_id, problem(error), seconds)

    return retry(call, STORE_BACKOFF, retry_if, limit=deadline - time.monotonic(), on_wait=say_why)


def _await_store(sources: ExhaustSources, store: Store, deadline: float, request_id: str) -> None:
    """Returns once `store` answers; raises ReportFailure naming it when it is still down at `deadline`,
    or at once when it refuses our login (waiting would not change that)."""
    def answers() -> None:
        if problem := _problem(sources, store):
            raise _StoreDown(problem)

    try:
        _retry_until(deadline, request_id, answers,
                     lambda error: isinstance(error, _StoreDown) and error.problem.kind is not Kind.REFUSED, str)
    except _StoreDown as down:
        raise ReportFailure(str(down.problem)) from None


def _on_object_store(job: ExhaustRun, deadline: float, request_id: str, action, *args):
    """action(*args) on the report store, retried while it is unreachable until `deadline`; raises
    ReportFailure naming it after that, or at once when it refuses us or lacks the container."""
    unreachable = f"{Store.OBJECT_STORE} ({job.staging.store.kind}) {Kind.UNREACHABLE}"
    try:
        return _retry_until(deadline, request_id, partial(action, *args),
                            lambda error: isinstance(error, UNAVAILABLE), lambda error: unreachable)
    except (StoreRefused, StoreMissing) as error:
        raise ReportFailure(str(error)) from None
    except UNAVAILABLE as error:
        raise ReportFailure(unreachable) from error


def _store_behind(sources: ExhaustSources, asks_for_consent: bool) -> Store | None:
    """The store a failed pipeline could not use, if any. Redis is suspected only when the report reads
    the cache (a program without PII consent never does, so its outage is no excuse)."""
    if _problem(sources, Store.CASSANDRA):
        return Store.CASSANDRA
    return Store.REDIS if asks_for_consent and _problem(sources, Store.REDIS) else None


def _run_through_outages(request: JobRequest, report: filters.ReportRequest, job: ExhaustRun,
                         staging_dir: str, shard_key: bytes, deadline: float) -> dict[str, int]:
    """Runs the pipeline to its end, waiting for a store that is down (until `deadline`) and running it
    again after one failed it; returns its counters."""
    store, attempt = Store.CASSANDRA, 1
    facts = None  # whether the program asks for consent (so the report reads the user cache), and its size
    while True:
        _await_store(job.sources, store, deadline, request.request_id)
        try:
            if facts is None:
                facts = exhaust.program_facts(report, job.sources, job.options)
            processes = exhaust.worker_processes(job.options, facts)
            options = runners.with_worker_processes(job.options, processes)
            if options is not job.options:
                _LOG.info("request %s: about %d rows, run on %d worker processes", request.request_id,
                          facts.estimated_rows, processes)
            with progress.shown(f"request {request.request_id}", job.progress_every, staging_dir=staging_dir):
                return counters(runners.run_and_wait(partial(
                    exhaust.run, options, exhaust.ExhaustInputs(
                        request=report, config=job.config, sources=job.sources, asks_for_consent=facts.asks_for_consent,
                        staging_dir=staging_dir, shard_key=shard_key))))
        except Exception:
            store = _store_behind(job.sources, asks_for_consent=bool(facts and facts.asks_for_consent))
            if store is None:
                raise
            if attempt == MAX_PIPELINE_ATTEMPTS:
                problem = _problem(job.sources, store) or StoreProblem(store, Kind.UNREACHABLE)
                raise ReportFailure(str(problem)) from None
        _LOG.warning("request %s: the pipeline failed while %s was unavailable; running it again once it answers",
                     request.request_id, store)
        job.staging.empty(staging_dir)
        attempt += 1


def _check_profiles(totals: dict[str, int], min_share: float) -> None:
    """A cache that answers but lacks the consenting users' profiles (e.g. restarted empty) would publish
    blank personal columns: fail the request instead, so a later run can produce it right."""
    found = totals.get("profiles_found", 0)
    consenting = found + totals.get("profile_missing", 0)
    if consenting and found / consenting <= min_share:
        raise ReportFailure(NO_PROFILES if not found else
                            f"the user cache has a profile for only {found} of {consenting} consenting users")


def produce(request: JobRequest, job: ExhaustRun) -> str:
    """Produces one claimed request's report and returns its published path. Raises RequestError (a
    rejection), ReportFailure (worth a later try), anything else when the pipeline failed."""
    report = filters.parse_request(request.request_data)
    if not request.encryption_key and job.config.requires_encryption_key:
        raise filters.RequestError("encryption_key is required for this report")
    password = zip_password(request.encryption_key, job.cipher) if request.encryption_key else None
    now = datetime.now(UTC)
    name = job_request.report_name(request.request_id, now, job.config.tz) + (".zip" if password else ".csv")
    # Stores down count against one limit for the whole request (--max-store-outage).
    deadline = time.monotonic() + job.max_store_outage
    _on_object_store(job, deadline, request.request_id, job.staging.store.check)
    # The shards are sealed for this request's key, which never leaves this process: only the merge below
    # reads them, and the merged file stays in private staging on this machine until it is whole.
    key = RunKey()
    with job.staging.folder(lease_key(request)) as staging_dir:
        totals = _run_through_outages(request, report, job, staging_dir, key.public, deadline)
        _LOG.info("request %s: %s", request.request_id, json.dumps(totals, sort_keys=True))
        rows_built = totals.get("report_rows_built", 0)
        if not rows_built:
            raise ReportFailure(job_request.NO_DATA_FOUND)
        _check_profiles(totals, job.min_profile_share)
        merged = FileSystems.join(job.staging.merge_dir(staging_dir), name)
        try:
            zipped = PasswordZip(password, name.rsplit(".", 1)[0] + ".csv", job.zip_crypto) if password else None
            rows = merge.merge_shards(staging_dir, merged, key=key, when=now.astimezone(job.config.tz), zipped=zipped)
        except IncompleteShard as exc:
            raise ReportFailure(f"report incomplete: shard {exc}; nothing published") from None
        if rows != rows_built:
            raise ReportFailure(f"report incomplete: {rows} of {rows_built} rows reached the merge "
                                "(is --staging shared with the workers?); nothing published")
        if not job.request_store.holds_leases():  # another run may have reclaimed the request meanwhile
            raise ReportFailure("lost the request's lease (PostgreSQL session ended); nothing published")
        return _on_object_store(job, deadline, request.request_id, job.staging.publish, merged, name)


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


def _produce_group(group: list[JobRequest], job: ExhaustRun) -> None:
    """Claims a group of duplicate requests, produces the first claimed, records its outcome for each."""
    store, claimed = job.request_store, []  # claimed: the requests whose lease is held here
    try:
        for request in group:
            if store.claim(request):
                claimed.append(request)
        if not claimed:
            return  # another live process is producing them
        started = time.monotonic()
        leader = claimed[0]
        destination, message, final = _outcome(leader, job)
        completed, elapsed = utcnow(), int((time.monotonic() - started) * 1000)
        if destination:
            store.mark_success(claimed, download_urls=[destination], file_created=completed, completed=completed,
                               execution_ms=elapsed)
        else:
            store.mark_failed(claimed, message=job_request.err_message(message), completed=completed,
                              execution_ms=elapsed, final=final)
        duplicates = f" (and {len(claimed) - 1} duplicate(s))" if len(claimed) > 1 else ""
        _LOG.info("request %s%s: %s in %d ms%s", leader.request_id, duplicates,
                  "SUCCESS" if destination else "FAILED", elapsed, f": {message}" if message else "")
    finally:
        for request in claimed:
            store.release(request)


class NotPending(Exception):
    """The request asked for is not pending (see `programusers status`)."""


class Unreachable(Exception):
    """The job_request table could not be read before any request was taken."""


def produce_pending(job: ExhaustRun, request_id: str | None = None) -> None:
    """The exhaust's one pass: removes the staging of runs that died and reclaims their requests, then
    produces every pending request (or the one `request_id` names), duplicates together, oldest first,
    recording each outcome. Raises Unreachable when the job_request table cannot be read at the start,
    NotPending when `request_id` names no pending request, runners.Stopped when Ctrl-C or SIGTERM stopped a
    pipeline (its request is reclaimed by a later run)."""
    try:
        if removed := job.staging.remove_dead(job.request_store.if_free):
            _LOG.warning("removed the staging of %d report(s) whose exhaust died", removed)
        for request in job.request_store.reclaim_interrupted(request_id):
            _LOG.warning("request %s: interrupted (its exhaust process died); iteration %d",
                         request.request_id, request.iteration + 1)
        pending = job.request_store.pending(request_id)
    except psycopg2.Error as exc:
        raise Unreachable(f"{job.request_store.table} is unreachable ({type(exc).__name__})") from None
    if request_id and not pending:
        raise NotPending(f"request {request_id} is not pending (see `programusers status`)")
    _LOG.info("%d pending request(s)", len(pending))
    for group in job_request.group_duplicates(pending):
        try:
            _produce_group(group, job)
        except psycopg2.Error as exc:  # the table unreachable now: the other groups may still go through
            _LOG.error("request %s: could not record its status (%s)", group[0].request_id, type(exc).__name__)
        except runners.Stopped:
            _LOG.error("request %s: stopped (Ctrl-C or SIGTERM); it stays PROCESSING until a later run reclaims "
                       "it, nothing was published", group[0].request_id)
            raise
