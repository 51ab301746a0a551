"""Shared fixtures. Tests marked `services` talk to the real local stack, which the session brings up
with scripts/stack (idempotent: a no-op when everything already answers)."""
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from programusers import schema, settings
from programusers.io import cassandra, postgres

REPO = Path(__file__).resolve().parents[1]
TEST_PROGRAMS_KEYSPACE = "test_sunbird_programs"
TEST_CONSENT_KEYSPACE = "test_sunbird"
TEST_JOB_REQUEST_TABLE = "test_job_request"


@pytest.fixture(scope="session")
def stack():
    if not os.environ.get("PROGRAMUSERS_SKIP_STACK_UP"):
        subprocess.run([str(REPO / "scripts" / "stack"), "up"], check=True)


@pytest.fixture(scope="session")
def cassandra_session(stack):
    cluster, session = cassandra.connect(settings.cassandra_hosts(settings.CASSANDRA_HOSTS), settings.CASSANDRA_PORT)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="session")
def pg_dsn(stack):
    return settings.POSTGRES_DSN


@pytest.fixture(scope="session")
def test_schema(cassandra_session, pg_dsn):
    """Fresh test keyspaces and job_request table for this session, created by the code under test."""
    for ks in (TEST_PROGRAMS_KEYSPACE, TEST_CONSENT_KEYSPACE):
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=120)
    schema.init_cassandra(cassandra_session, TEST_PROGRAMS_KEYSPACE, TEST_CONSENT_KEYSPACE, settings.REPLICATION)
    connection = postgres.connect(pg_dsn)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TEST_JOB_REQUEST_TABLE}")
    schema.init_postgres(connection, TEST_JOB_REQUEST_TABLE)
    connection.close()
    return {"programs_keyspace": TEST_PROGRAMS_KEYSPACE, "consent_keyspace": TEST_CONSENT_KEYSPACE,
            "job_request_table": TEST_JOB_REQUEST_TABLE}


@pytest.fixture
def unique():
    """A short unique suffix, so tests sharing the stack never see each other's data."""
    return uuid.uuid4().hex[:10]
