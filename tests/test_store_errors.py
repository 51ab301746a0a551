"""store_errors.classify: which store failed and how, from the store clients' exception types only."""
import psycopg2
import pytest
import redis
from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable

from programusers.io import postgres
from programusers.store_errors import Kind, Store, StoreProblem, classify

SECRET = "user:7 phone=9876543210"  # stands for whatever a client's message may quote


@pytest.mark.parametrize("error,problem", [
    (NoHostAvailable(SECRET, {"10.0.0.1:9042": AuthenticationFailed(SECRET)}), StoreProblem(Store.CASSANDRA, Kind.REFUSED)),
    (NoHostAvailable(SECRET, {"10.0.0.1:9042": OSError(SECRET)}), StoreProblem(Store.CASSANDRA, Kind.UNREACHABLE)),
    (redis.AuthenticationError(SECRET), StoreProblem(Store.REDIS, Kind.REFUSED)),
    (redis.ConnectionError(SECRET), StoreProblem(Store.REDIS, Kind.UNREACHABLE)),
    (redis.TimeoutError(SECRET), StoreProblem(Store.REDIS, Kind.UNREACHABLE)),
    (postgres.LoginRefused(SECRET), StoreProblem(Store.POSTGRES, Kind.REFUSED)),
    (psycopg2.OperationalError(SECRET), StoreProblem(Store.POSTGRES, Kind.UNREACHABLE)),
])
def test_a_store_error_is_named_by_store_and_kind_without_its_text(error, problem):
    assert classify(error) == problem
    assert SECRET not in str(problem)


def test_the_store_error_behind_another_error_is_found():
    try:
        try:
            raise redis.ConnectionError(SECRET)
        except redis.ConnectionError as cause:
            raise RuntimeError("a bundle failed") from cause
    except RuntimeError as error:
        assert classify(error) == StoreProblem(Store.REDIS, Kind.UNREACHABLE)


@pytest.mark.parametrize("error", [ValueError(SECRET), redis.ResponseError("WRONGTYPE"), KeyError("x")])
def test_other_errors_are_not_store_outages(error):
    assert classify(error) is None
