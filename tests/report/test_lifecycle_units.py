"""The request lifecycle (report/lifecycle.py) over an in-memory request store, so `make check` runs it:
claims and leases, duplicates produced once, each outcome recorded (SUCCESS with its location, FAILED with a
reason that holds no PII, final or retried), PostgreSQL lost at the start or while recording, a stopped run,
the staging of dead runs. The live stack's version of these runs is test_lifecycle.py.

Where a test needs a report produced, `produced` stands in for lifecycle.produce (the Beam pipeline, which
needs Cassandra); the rest run lifecycle.produce itself, on stores that are not there (closed ports). The
last test (services) runs the real pipeline over the in-memory store: a lease lost while the report ran.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg2
import pytest
from exhaust_cases import d_ana_report, enrollment, f, unzipped

from programusers import cli, runners
from programusers.commands import report as report_command
from programusers.crypto import PlatformCipher
from programusers.io.cassandra import CassandraConnection
from programusers.io.redis import RedisConnection
from programusers.model_config import default_model_config
from programusers.pipelines.exhaust import ExhaustSources
from programusers.report import lifecycle
from programusers.report.job_request import (
    FAILED,
    JOB_ID,
    MAX_ITERATIONS,
    PROCESSING,
    SUBMITTED,
    SUCCESS,
    JobRequest,
    new_request_id,
)
from programusers.report.request_store import INTERRUPTED, lease_key, utcnow
from programusers.report.staging import Staging, folder_name
from programusers.report.store import ReportStore
from programusers.schema import ERR_MESSAGE_WIDTH

PHONE = "9876543210"  # stands for the PII an exception's text may hold


# --- an in-memory job_request table and its RequestStore --------------------------------------------------

@dataclass
class Row:
    request: JobRequest
    submitted: int  # the order of submission (dt_job_submitted)
    status: str = SUBMITTED
    iteration: int = 0
    err_message: str | None = None
    download_urls: list[str] | None = None
    dt_job_completed: datetime | None = None
    dt_file_created: datetime | None = None
    execution_time: int | None = None


@dataclass
class JobRequestTable:
    """One job_request table and the advisory locks of the PostgreSQL holding it (lease key -> holding
    store), shared by the stores of every run. `down`: every call fails as on a PostgreSQL outage;
    `fails_to_record`: the request ids whose outcome cannot be recorded (the server lost meanwhile)."""
    name: str = "job_request"
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    locks: dict[int, object] = field(default_factory=dict)
    down: bool = False
    fails_to_record: set[str] = field(default_factory=set)

    def submit(self, request: JobRequest) -> JobRequest:
        self.rows[request.tag, request.request_id] = Row(request, submitted=len(self.rows))
        return request

    def row(self, request: JobRequest) -> Row:
        return self.rows[request.tag, request.request_id]

    def check(self) -> None:
        if self.down:
            raise psycopg2.OperationalError(f"could not connect to server (password=secret, phone {PHONE})")


def pending(row: Row) -> bool:
    return row.status == SUBMITTED or (row.status == FAILED and row.iteration < MAX_ITERATIONS)


class MemoryRequestStore:
    """The methods of request_store.RequestStore that lifecycle uses, with its rules: claims only of pending
    requests and only under a lease no other run holds; outcomes recorded only on a request still as this
    store claimed it (PROCESSING at its iteration); leases that go with the store's session."""

    def __init__(self, table: JobRequestTable, *, session_ends_on_claim: bool = False):
        self._table, self.table = table, table.name
        self.alive, self.session_ends_on_claim = True, session_ends_on_claim

    def _holder(self, key: int):
        return self._table.locks.get(key)

    def _rows(self, keep, request_id: str | None) -> list[Row]:
        self._table.check()
        rows = [r for r in self._table.rows.values() if keep(r) and request_id in (None, r.request.request_id)]
        return sorted(rows, key=lambda r: (r.submitted, r.request.request_id))

    def pending(self, request_id: str | None = None) -> list[JobRequest]:
        return [dataclasses.replace(r.request, iteration=r.iteration) for r in self._rows(pending, request_id)]

    def claim(self, request: JobRequest) -> bool:
        self._table.check()
        key = lease_key(request)
        if self._holder(key) not in (None, self):
            return False
        row = self._table.row(request)
        if not pending(row):
            return False
        self._table.locks[key], row.status = self, PROCESSING
        if self.session_ends_on_claim:
            self.end_session()
        return True

    def release(self, request: JobRequest) -> None:
        if self._holder(key := lease_key(request)) is self:
            del self._table.locks[key]

    @contextmanager
    def if_free(self, key: int):
        free = self._holder(key) is None
        if free:
            self._table.locks[key] = self
        try:
            yield free
        finally:
            if free:
                del self._table.locks[key]

    def reclaim_interrupted(self, request_id: str | None = None):
        for row in self._rows(lambda r: r.status == PROCESSING, request_id):
            request = dataclasses.replace(row.request, iteration=row.iteration)
            with self.if_free(lease_key(request)) as dead:
                if dead:
                    row.status, row.err_message, row.iteration = FAILED, INTERRUPTED, row.iteration + 1
                    yield request

    def holds_leases(self) -> bool:
        return self.alive

    def end_session(self) -> None:
        """As when PostgreSQL ends the leases' session: every lease this store held is released."""
        self.alive = False
        self._table.locks = {key: holder for key, holder in self._table.locks.items() if holder is not self}

    def _record(self, requests, update) -> int:
        """update(row) on each request still as this store claimed it; how many were."""
        self._table.check()
        recorded = 0
        for request in requests:
            if request.request_id in self._table.fails_to_record:
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            row = self._table.row(request)
            if (row.status, row.iteration) == (PROCESSING, request.iteration):
                update(row)
                recorded += 1
        return recorded

    def mark_success(self, requests, *, download_urls, file_created, completed, execution_ms) -> int:
        def update(row: Row) -> None:
            row.status, row.download_urls, row.err_message = SUCCESS, download_urls, None
            row.dt_file_created, row.dt_job_completed, row.execution_time = file_created, completed, execution_ms
        return self._record(requests, update)

    def mark_failed(self, requests, *, message, completed, execution_ms, final=False) -> int:
        def update(row: Row) -> None:
            row.status, row.err_message, row.download_urls = FAILED, message, None
            row.iteration = max(row.iteration + 1, MAX_ITERATIONS) if final else row.iteration + 1
            row.dt_job_completed, row.execution_time = completed, execution_ms
        return self._record(requests, update)


# --- fixtures ------------------------------------------------------------------------------------------------

def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def job_requests():
    return JobRequestTable()


@pytest.fixture
def job(job_requests, tmp_path):
    """An exhaust run over `job_requests`, publishing to tmp_path/out; Cassandra and Redis are closed ports."""
    options = runners.pipeline_options("DirectRunner")
    staging = Staging.prepare(str(tmp_path / "staging"), ReportStore("local", str(tmp_path / "out")), options,
                              file_mode=0o600)
    sources = ExhaustSources(cassandra=CassandraConnection(("127.0.0.1",), closed_port()), programs_keyspace="p",
                             consent_keyspace="c", redis=RedisConnection(port=closed_port()))
    return lifecycle.ExhaustRun(config=default_model_config(), sources=sources, options=options, staging=staging,
                                request_store=MemoryRequestStore(job_requests), cipher=PlatformCipher("salt"),
                                zip_crypto=False, max_store_outage=0.0, min_profile_share=0.0, progress_every=30.0)


def another_run(job: lifecycle.ExhaustRun, table: JobRequestTable) -> lifecycle.ExhaustRun:
    """The same run's settings in another process (leases of its own)."""
    return dataclasses.replace(job, request_store=MemoryRequestStore(table))


@dataclass
class Produced:
    """Stands for lifecycle.produce: publishes `<request_id>.csv` at once, or raises what `raises` maps the
    request id to; `calls` lists the request ids produced, in order."""
    calls: list[str] = field(default_factory=list)
    leased: list[bool] = field(default_factory=list)  # whether this run held the request's lease meanwhile
    raises: dict[str, BaseException] = field(default_factory=dict)

    def __call__(self, request: JobRequest, job: lifecycle.ExhaustRun) -> str:
        self.calls.append(request.request_id)
        self.leased.append(job.request_store._table.locks.get(lease_key(request)) is job.request_store)
        if error := self.raises.get(request.request_id):
            raise error
        path = os.path.join(job.staging.output, JOB_ID, f"{request.request_id}.csv")
        with open(path, "w") as report:
            report.write("User UUID\n")
        return path


@pytest.fixture
def produced(monkeypatch):
    stand_in = Produced()
    monkeypatch.setattr(lifecycle, "produce", stand_in)
    return stand_in


def request(program_id="p-1", *, by="manager-1", key="k", district="d-1", request_id=None) -> JobRequest:
    """A district's report request (duplicates: equal program, district, key and requester)."""
    data = {"filters": [
        {"table_name": "program_enrollment", "table_filters": [f("program_id", "=", program_id),
                                                               f("user_locations['district_id']", "=", district)]},
        {"table_name": "user_consent", "table_filters": [f("object_id", "=", program_id)]}]}
    return JobRequest(tag=f"{program_id}:ch-1", request_id=request_id or new_request_id(), request_data=data,
                      requested_by=by, requested_channel="ch-1", encryption_key=key)


# --- what users rely on ----------------------------------------------------------------------------------------

def test_a_pending_request_is_produced_once_and_marked_success_with_its_location(job_requests, job, produced):
    submitted = job_requests.submit(request())
    lifecycle.produce_pending(job)

    row = job_requests.row(submitted)
    assert produced.calls == [submitted.request_id] and produced.leased == [True]
    assert (row.status, row.iteration, row.err_message) == (SUCCESS, 0, None)
    assert row.download_urls == [os.path.join(job.staging.output, JOB_ID, f"{submitted.request_id}.csv")]
    assert os.path.exists(row.download_urls[0])
    assert row.dt_job_completed == row.dt_file_created and row.dt_job_completed <= utcnow()
    assert row.execution_time >= 0
    assert job_requests.locks == {}  # the lease is released
    lifecycle.produce_pending(job)
    assert produced.calls == [submitted.request_id]  # a finished request is not produced again


def test_identical_requests_are_produced_once_and_share_its_outcome(job_requests, job, produced):
    first, copy = job_requests.submit(request()), job_requests.submit(request())
    other_manager = job_requests.submit(request(by="manager-2"))  # same filters, another requester: its own report
    other_key = job_requests.submit(request(key="k-2"))  # another zip password: its own report
    failing, failing_copy = job_requests.submit(request("p-2")), job_requests.submit(request("p-2"))
    produced.raises[failing.request_id] = lifecycle.ReportFailure("Cassandra is unreachable")
    lifecycle.produce_pending(job)

    assert produced.calls == [first.request_id, other_manager.request_id, other_key.request_id,
                              failing.request_id]  # oldest first, each group's first
    assert job_requests.row(copy).download_urls == job_requests.row(first).download_urls
    assert {job_requests.row(r).status for r in (first, copy, other_manager, other_key)} == {SUCCESS}
    assert len({job_requests.row(r).download_urls[0] for r in (first, other_manager, other_key)}) == 3
    for row in map(job_requests.row, (failing, failing_copy)):
        assert (row.status, row.iteration, row.err_message) == (FAILED, 1, "Cassandra is unreachable")


def test_a_request_a_live_run_holds_is_left_to_it_and_its_free_duplicate_produced(job_requests, job, produced):
    held, duplicate = job_requests.submit(request()), job_requests.submit(request())
    live = MemoryRequestStore(job_requests)
    assert live.claim(held)
    lifecycle.produce_pending(job)

    assert produced.calls == [duplicate.request_id]
    assert job_requests.row(held).status == PROCESSING  # the live run records it; no one else does
    assert job_requests.row(duplicate).status == SUCCESS
    assert list(job.request_store.reclaim_interrupted()) == []  # its producer is alive


def test_a_request_of_a_run_that_died_is_reclaimed_and_produced_at_its_next_iteration(job_requests, job, produced,
                                                                                       tmp_path, caplog):
    submitted = job_requests.submit(request())
    died = MemoryRequestStore(job_requests)
    assert died.claim(submitted)
    left = os.path.join(job.staging.location, folder_name(lease_key(submitted)))
    os.makedirs(left)  # the dead run's staging
    died.end_session()  # as when its process is killed: PostgreSQL releases its lease
    with caplog.at_level(logging.INFO, logger="programusers"):
        lifecycle.produce_pending(job)

    row = job_requests.row(submitted)
    assert (row.status, row.iteration, row.err_message) == (SUCCESS, 1, None)
    assert not os.path.exists(left)
    assert f"request {submitted.request_id}: interrupted (its exhaust process died); iteration 1" in caplog.text
    assert "removed the staging of 1 report(s) whose exhaust died" in caplog.text


def test_the_staging_of_a_live_run_is_kept(job_requests, job, produced):
    held = job_requests.submit(request())
    live = MemoryRequestStore(job_requests)
    assert live.claim(held)
    folder = os.path.join(job.staging.location, folder_name(lease_key(held)))
    os.makedirs(folder)
    stranger = os.path.join(job.staging.location, "not-a-request-folder")
    os.makedirs(stranger)
    lifecycle.produce_pending(job)
    assert os.path.isdir(folder) and os.path.isdir(stranger)


def test_a_pipeline_failure_is_retried_later_and_its_reason_holds_no_pii(job_requests, job, produced, caplog):
    submitted = job_requests.submit(request())
    produced.raises[submitted.request_id] = ValueError(f"bad row for phone {PHONE}")
    with caplog.at_level(logging.INFO, logger="programusers"):
        lifecycle.produce_pending(job)

    row = job_requests.row(submitted)
    assert (row.status, row.iteration, row.download_urls) == (FAILED, 1, None)
    assert row.err_message == "report pipeline failed (ValueError); see the exhaust log"
    assert PHONE not in caplog.text
    assert job.request_store.pending() == [dataclasses.replace(submitted, iteration=1)]  # a later run retries it
    assert job_requests.locks == {}


def test_a_request_failing_every_run_is_final_at_the_last_iteration(job_requests, job, produced):
    submitted = job_requests.submit(request())
    produced.raises[submitted.request_id] = lifecycle.ReportFailure(lifecycle.NO_PROFILES)
    for _ in range(MAX_ITERATIONS + 1):
        lifecycle.produce_pending(job)
    assert produced.calls == [submitted.request_id] * MAX_ITERATIONS
    row = job_requests.row(submitted)
    assert (row.status, row.iteration, row.err_message) == (FAILED, MAX_ITERATIONS, lifecycle.NO_PROFILES)


def test_a_long_reason_is_cut_to_the_err_message_column(job_requests, job, produced):
    submitted = job_requests.submit(request())
    produced.raises[submitted.request_id] = lifecycle.ReportFailure("x" * 2000)
    lifecycle.produce_pending(job)
    assert job_requests.row(submitted).err_message == "x" * ERR_MESSAGE_WIDTH


def test_a_request_that_can_never_be_produced_is_failed_for_good_without_a_store(job_requests, job):
    # Checked before any store is asked (Cassandra and Redis are closed ports here): a request id that could
    # leave the reports' folder.
    submitted = job_requests.submit(request(request_id="../../etc"))
    lifecycle.produce_pending(job)
    row = job_requests.row(submitted)
    assert (row.status, row.iteration) == (FAILED, MAX_ITERATIONS)
    assert row.err_message == "request_id may hold only letters, digits, '_' and '-'"
    assert job.request_store.pending() == []
    assert not os.listdir(os.path.join(job.staging.output, JOB_ID))


def test_cassandra_down_past_the_outage_limit_fails_the_request_for_a_later_run(job_requests, job, caplog):
    submitted = job_requests.submit(request())
    with caplog.at_level(logging.INFO, logger="programusers"):
        lifecycle.produce_pending(job)  # --max-store-outage 0: no wait

    row = job_requests.row(submitted)
    assert (row.status, row.iteration, row.err_message) == (FAILED, 1, "Cassandra is unreachable")
    assert job.request_store.pending() == [dataclasses.replace(submitted, iteration=1)]
    assert not os.listdir(os.path.join(job.staging.output, JOB_ID))  # nothing published
    assert not os.listdir(job.staging.location)  # its private folder is gone
    assert "trying again" not in caplog.text


def test_postgresql_down_at_the_start_stops_the_run_naming_the_table_only(job_requests, job, produced):
    job_requests.submit(request())
    job_requests.down = True
    with pytest.raises(lifecycle.Unreachable) as raised:
        lifecycle.produce_pending(job)
    assert str(raised.value) == "job_request is unreachable (OperationalError)"
    assert produced.calls == []


def test_an_outcome_that_cannot_be_recorded_does_not_stop_the_other_requests(job_requests, job, produced, caplog):
    lost, next_one = job_requests.submit(request("p-1")), job_requests.submit(request("p-2"))
    job_requests.fails_to_record.add(lost.request_id)
    lifecycle.produce_pending(job)

    assert produced.calls == [lost.request_id, next_one.request_id]
    assert job_requests.row(next_one).status == SUCCESS
    assert job_requests.row(lost).status == PROCESSING
    assert f"request {lost.request_id}: could not record its status (OperationalError)" in caplog.text
    # Its lease was released: the next run reclaims it as interrupted and produces it again.
    job_requests.fails_to_record.clear()
    lifecycle.produce_pending(another_run(job, job_requests))
    assert (job_requests.row(lost).status, job_requests.row(lost).iteration) == (SUCCESS, 1)


def test_a_stopped_run_leaves_its_request_processing_for_a_later_run(job_requests, job, produced):
    stopped, untouched = job_requests.submit(request("p-1")), job_requests.submit(request("p-2"))
    produced.raises[stopped.request_id] = runners.Stopped(None)
    with pytest.raises(runners.Stopped):
        lifecycle.produce_pending(job)
    assert produced.calls == [stopped.request_id]  # the run ends there
    assert (job_requests.row(stopped).status, job_requests.row(untouched).status) == (PROCESSING, SUBMITTED)

    produced.raises.clear()
    lifecycle.produce_pending(another_run(job, job_requests))
    assert [(job_requests.row(r).status, job_requests.row(r).iteration) for r in (stopped, untouched)] == [(SUCCESS, 1),
                                                                                           (SUCCESS, 0)]


def test_one_request_by_its_id(job_requests, job, produced):
    first, second = job_requests.submit(request("p-1")), job_requests.submit(request("p-2"))
    lifecycle.produce_pending(job, second.request_id)
    assert produced.calls == [second.request_id]
    assert job_requests.row(first).status == SUBMITTED
    with pytest.raises(lifecycle.NotPending, match=f"request {second.request_id} is not pending"):
        lifecycle.produce_pending(job, second.request_id)


@pytest.mark.parametrize("found, missing, min_share, fails", [
    (0, 10, 0.0, lifecycle.NO_PROFILES),  # the default: fail only when no consenting user has a profile
    (1, 9, 0.0, None),
    (0, 0, 0.0, None),  # no consenting user: nothing to look up
    (5, 5, 0.5, "the user cache has a profile for only 5 of 10 consenting users"),  # at the share: fails
    (6, 4, 0.5, None),
    (0, 10, -1.0, None),  # -1: never
])
def test_a_user_cache_missing_profiles_fails_the_request(found, missing, min_share, fails):
    totals = {"profiles_found": found, "profile_missing": missing, "report_rows_built": 10}
    if fails is None:
        lifecycle._check_profiles(totals, min_share)
    else:
        with pytest.raises(lifecycle.ReportFailure) as raised:
            lifecycle._check_profiles(totals, min_share)
        assert str(raised.value) == fails


# --- the real pipeline over the in-memory store (the stack's Cassandra and Redis) ---------------------------------

def exhaust_run(scenario, tmp_path, store) -> lifecycle.ExhaustRun:
    """The ExhaustRun the `exhaust` command builds for the scenario, over `store`."""
    args, extra = cli.build_parser().parse_known_args(
        ["exhaust", "--runner", "DirectRunner", *scenario.flags, "--output", str(tmp_path / "out"),
         "--staging", str(tmp_path / "staging")])
    args.pipeline_args = extra
    built = report_command._prepare(args)
    built.request_store.close()  # its PostgreSQL leases: not used here
    return dataclasses.replace(built, request_store=store)


@pytest.mark.services
def test_a_lease_lost_while_the_report_ran_publishes_nothing_and_a_later_run_produces_it(scenario, job_requests,
                                                                                         tmp_path):
    program = scenario.a
    submitted = job_requests.submit(JobRequest(
        tag=f"{program.id}:ch-1", request_id=new_request_id(), requested_by="manager-1", requested_channel="ch-1",
        encryption_key="k-district",
        request_data=enrollment(f("user_locations['district_id']", "=", "d-ana"), program=program)))
    lost = exhaust_run(scenario, tmp_path, MemoryRequestStore(job_requests, session_ends_on_claim=True))
    lifecycle.produce_pending(lost)

    row = job_requests.row(submitted)
    assert (row.status, row.iteration, row.err_message) == (
        FAILED, 1, "lost the request's lease (PostgreSQL session ended); nothing published")
    assert not os.listdir(tmp_path / "out" / JOB_ID) and not os.listdir(tmp_path / "staging")

    lifecycle.produce_pending(exhaust_run(scenario, tmp_path, MemoryRequestStore(job_requests)))
    row = job_requests.row(submitted)
    assert (row.status, row.iteration, row.err_message) == (SUCCESS, 1, None)
    assert unzipped(row.download_urls[0], "k-district") == d_ana_report(scenario)
