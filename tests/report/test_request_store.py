"""RequestStore on the stack's PostgreSQL (tests of programusers/report/request_store.py): submit and its
outcomes, one claim per request among live processes, leases that die with their process, and outcomes
recorded only on a request still as this store claimed it."""
from datetime import datetime

import pytest

from programusers.report.job_request import FAILED, MAX_ITERATIONS, PROCESSING, SUBMITTED, SUCCESS, JobRequest
from programusers.report.request_store import INTERRUPTED, RequestStore

pytestmark = pytest.mark.services
WHEN = datetime(2026, 1, 1)


def request(n: int = 1) -> JobRequest:
    return JobRequest(tag=f"program-{n}:channel", request_id=f"R{n:031d}", request_data={"filters": []},
                      requested_by="manager", requested_channel="channel")


def test_a_request_is_created_once_and_a_failed_one_resubmitted_with_its_iteration(pg_dsn, table):
    store = RequestStore(pg_dsn, table)
    assert store.submit(request())[1] == "created"
    row, outcome = store.submit(request())
    assert (outcome, row["status"]) == ("existing", SUBMITTED)
    with RequestStore(pg_dsn, table, leases=True) as producer:
        (pending,) = producer.pending()
        assert producer.claim(pending)
        assert producer.mark_failed([pending], message="store down", completed=WHEN, execution_ms=5) == 1
    row, outcome = store.submit(request())
    assert (outcome, row["status"], row["iteration"]) == ("resubmitted", SUBMITTED, 1)


def test_only_one_live_process_claims_a_request(pg_dsn, table):
    RequestStore(pg_dsn, table).insert(request())
    with RequestStore(pg_dsn, table, leases=True) as first, RequestStore(pg_dsn, table, leases=True) as second:
        (pending,) = first.pending()
        assert first.claim(pending) and not second.claim(pending)
        assert list(second.reclaim_interrupted()) == []  # its producer is alive
        assert first.mark_success([pending], download_urls=["r.zip"], file_created=WHEN, completed=WHEN,
                                  execution_ms=5) == 1
    assert RequestStore(pg_dsn, table).status(pending.request_id)[0]["status"] == SUCCESS


def test_a_request_whose_process_died_is_reclaimed_and_pending_again(pg_dsn, table):
    RequestStore(pg_dsn, table).insert(request())
    died = RequestStore(pg_dsn, table, leases=True)
    (pending,) = died.pending()
    assert died.claim(pending)
    died.close()  # its session ends: PostgreSQL releases the lease, as when the process is killed
    with RequestStore(pg_dsn, table, leases=True) as next_run:
        assert [r.request_id for r in next_run.reclaim_interrupted()] == [pending.request_id]
        (row,) = next_run.status(pending.request_id)
        assert (row["status"], row["err_message"], row["iteration"]) == (FAILED, INTERRUPTED, 1)
        (again,) = next_run.pending()
        assert again.iteration == 1 and next_run.claim(again)
        # An outcome is recorded only on the claim as this store holds it: not on the first one's.
        assert next_run.mark_success([pending], download_urls=["r.zip"], file_created=WHEN, completed=WHEN,
                                     execution_ms=5) == 0
        assert next_run.status(pending.request_id)[0]["status"] == PROCESSING


def test_a_final_failure_is_never_pending_again(pg_dsn, table):
    RequestStore(pg_dsn, table).insert(request())
    with RequestStore(pg_dsn, table, leases=True) as producer:
        (pending,) = producer.pending()
        assert producer.claim(pending)
        producer.mark_failed([pending], message="bad filter", completed=WHEN, execution_ms=5, final=True)
        assert producer.pending() == []
        assert producer.status(pending.request_id)[0]["iteration"] == MAX_ITERATIONS
