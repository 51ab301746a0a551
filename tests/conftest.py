"""Shared fixtures. Tests marked `services` talk to the real local stack, which the session brings up
with scripts/stack (idempotent: a no-op when everything already answers)."""
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from programusers import schema, settings
from programusers.io import postgres
from programusers.io.cassandra import CassandraConnection, close_shared_sessions

REPO = Path(__file__).resolve().parents[1]
# No time limit per example: a quarter-second stall of a loaded CI machine is no failure of the code.
hypothesis_settings.register_profile("programusers", deadline=None)
hypothesis_settings.load_profile("programusers")
# Shared fixtures: the exhaust's end-to-end scenario, the request API's token keys.
pytest_plugins = ["exhaust_cases", "api_client"]
LOCAL_CASSANDRA = CassandraConnection(tuple(settings.cassandra_hosts(settings.CASSANDRA_HOSTS)),
                                      settings.CASSANDRA_PORT)
# Per test session, so two sessions sharing the stack never drop each other's data.
_SESSION = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
TEST_PROGRAMS_KEYSPACE = f"test_programs_{_SESSION}"
TEST_CONSENT_KEYSPACE = f"test_consent_{_SESSION}"
TEST_JOB_REQUEST_TABLE = f"test_job_request_{_SESSION}"
# Counters that a loaded machine may add to any run: a write that Cassandra timed out and that was sent
# again, a busy Kafka coordinator or producer queue, a Redis retry. Tests that count outcomes leave them out.
WAIT_COUNTERS = frozenset({"write_retries", "write_throttled_ms", "kafka_group_throttled_ms",
                           "kafka_produce_throttled_ms", "redis_throttled_ms"})


def outcomes(totals: dict[str, int]) -> dict[str, int]:
    """A run's counters without WAIT_COUNTERS."""
    return {name: count for name, count in totals.items() if name not in WAIT_COUNTERS}


def pytest_collection_modifyitems(items):
    """A test that reaches the stack is a `services` test, marked or not: `make check` leaves it out."""
    for item in items:
        if "stack" in item.fixturenames:
            item.add_marker(pytest.mark.services)


def pytest_sessionfinish(session, exitstatus):
    close_shared_sessions()  # as a command does when its pipelines are done


@pytest.fixture(scope="session")
def stack():
    if not os.environ.get("PROGRAMUSERS_SKIP_STACK_UP"):
        subprocess.run([str(REPO / "scripts" / "stack"), "up"], check=True)


@pytest.fixture(scope="session")
def cassandra_session(stack):
    cluster, session = LOCAL_CASSANDRA.connect()
    yield session
    cluster.shutdown()


@pytest.fixture(scope="session")
def pg_dsn(stack):
    return settings.POSTGRES_DSN


@pytest.fixture(scope="session")
def test_schema(cassandra_session, pg_dsn):
    """Fresh test keyspaces and job_request table for this session, created by the code under test."""
    schema.init_cassandra(cassandra_session, TEST_PROGRAMS_KEYSPACE, TEST_CONSENT_KEYSPACE, settings.REPLICATION)
    connection = postgres.connect(pg_dsn)
    schema.init_postgres(connection, TEST_JOB_REQUEST_TABLE)
    yield {"programs_keyspace": TEST_PROGRAMS_KEYSPACE, "consent_keyspace": TEST_CONSENT_KEYSPACE,
           "job_request_table": TEST_JOB_REQUEST_TABLE}
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TEST_JOB_REQUEST_TABLE}")
    connection.close()
    for ks in (TEST_PROGRAMS_KEYSPACE, TEST_CONSENT_KEYSPACE):
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=120)


@pytest.fixture
def unique():
    """A short unique suffix, so tests sharing the stack never see each other's data."""
    return uuid.uuid4().hex[:10]
