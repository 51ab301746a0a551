"""programusers/io/postgres.py on the stack's PostgreSQL: a refused login told from a server that is down
(named without the DSN's secrets), plain queries each in a transaction of their own, the connection pool,
and the advisory locks that hold the exhaust's leases."""
import socket
import threading
import time
import uuid

import psycopg2
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg2.extensions import make_dsn

from programusers.io import postgres

pytestmark = pytest.mark.services
SECRET = "s3cret-Pa55word"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def backend_pid(connection) -> int:
    return postgres.query(connection, "SELECT pg_backend_pid() AS pid")[0]["pid"]


@pytest.fixture
def scratch_table(pg_dsn):
    name = f"test_postgres_{uuid.uuid4().hex[:10]}"
    with postgres.session(pg_dsn) as connection:
        postgres.query(connection, f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
    yield name
    with postgres.session(pg_dsn) as connection:
        postgres.query(connection, f"DROP TABLE IF EXISTS {name}")


# --- connect: refused or unreachable, never the DSN's text -------------------------------------------------

@pytest.mark.parametrize("wrong", [{"user": "no_such_role_x7"}, {"dbname": "no_such_database_x7"}])
def test_a_login_the_server_turns_down_is_refused_and_named_without_its_secrets(pg_dsn, wrong):
    with pytest.raises(postgres.LoginRefused) as raised:
        postgres.connect(make_dsn(pg_dsn, password=SECRET, **wrong))
    assert str(raised.value) == "PostgreSQL refused the login"
    assert isinstance(raised.value, psycopg2.OperationalError)  # callers catching psycopg2.Error still do


@pytest.mark.parametrize("where", [
    lambda dsn: make_dsn(dsn, host="127.0.0.1", port=closed_port(), password=SECRET),
    lambda dsn: make_dsn(dsn, host="/nonexistent-socket-folder", password=SECRET),  # a Unix socket's folder
    lambda dsn: make_dsn(dsn, host="127.0.0.1,127.0.0.1", port=f"{closed_port()},{closed_port()}"),  # every host
])
def test_a_server_that_is_down_is_unreachable_not_refused(pg_dsn, where):
    with pytest.raises(psycopg2.OperationalError) as raised:
        postgres.connect(where(pg_dsn))
    assert not isinstance(raised.value, postgres.LoginRefused)


def test_any_host_of_the_dsn_that_answers_tells_a_refused_login(pg_dsn):
    params = psycopg2.extensions.parse_dsn(pg_dsn)
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    dsn = make_dsn(pg_dsn, host=f"127.0.0.1,{host}", port=f"{closed_port()},{port}", user="no_such_role_x7")
    with pytest.raises(postgres.LoginRefused):
        postgres.connect(dsn)


# --- session and query ---------------------------------------------------------------------------------------

def test_a_session_closes_its_connection_afterwards_even_on_an_error(pg_dsn):
    with postgres.session(pg_dsn) as connection:
        assert postgres.query(connection, "SELECT 1 AS one") == [{"one": 1}]
    assert connection.closed
    with pytest.raises(ZeroDivisionError), postgres.session(pg_dsn) as failed:
        raise ZeroDivisionError
    assert failed.closed


def test_a_query_is_a_transaction_of_its_own_its_rows_dicts(pg_dsn, scratch_table):
    with postgres.session(pg_dsn) as writer, postgres.session(pg_dsn) as reader:
        assert postgres.query(writer, f"INSERT INTO {scratch_table} VALUES (%s, %s)", (1, "one")) == []
        # Committed at once: another session sees it.
        assert postgres.query(reader, f"SELECT id, note FROM {scratch_table}") == [{"id": 1, "note": "one"}]
        with pytest.raises(psycopg2.errors.UniqueViolation):
            postgres.query(writer, f"INSERT INTO {scratch_table} VALUES (2, 'two'), (1, 'again')")
        # Rolled back whole, and the connection goes on.
        assert postgres.query(writer, f"SELECT id FROM {scratch_table} ORDER BY id") == [{"id": 1}]
        rows = postgres.query(writer, f"UPDATE {scratch_table} SET note = 'uno' RETURNING id, note")
        assert rows == [{"id": 1, "note": "uno"}]


# --- the pool --------------------------------------------------------------------------------------------------

def test_the_pool_hands_out_its_connections_again(pg_dsn):
    pool = postgres.ConnectionPool(pg_dsn, size=2)
    try:
        pids = []
        for _ in range(3):
            with pool.session() as connection:
                pids.append(backend_pid(connection))
        assert len(set(pids)) == 1  # one server process for three sessions one after another
    finally:
        pool.close()
    assert connection.closed


def test_a_connection_whose_session_failed_is_closed_not_handed_out_again(pg_dsn):
    pool = postgres.ConnectionPool(pg_dsn, size=1)
    try:
        with pytest.raises(psycopg2.errors.UndefinedTable), pool.session() as failed:
            first = backend_pid(failed)
            postgres.query(failed, "SELECT * FROM no_such_table_x7")
        assert failed.closed
        with pool.session() as connection:
            assert backend_pid(connection) != first
    finally:
        pool.close()


def test_the_pool_opens_at_most_its_size_and_a_session_waits_for_one(pg_dsn):
    pool, size = postgres.ConnectionPool(pg_dsn, size=2), 2
    inside, most, lock, release = [0], [0], threading.Lock(), threading.Event()
    pids = set()

    def work():
        with pool.session() as connection:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                pids.add(backend_pid(connection))
            release.wait(10)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(5)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while inside[0] < size and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # a third session, were it let in, would be in by now
        assert inside[0] == size
        release.set()
        for thread in threads:
            thread.join(10)
        assert (most[0], len(pids)) == (size, size)
    finally:
        release.set()
        pool.close()


def test_a_pool_whose_server_is_down_raises_the_unreachable_error(pg_dsn):
    pool = postgres.ConnectionPool(make_dsn(pg_dsn, host="127.0.0.1", port=closed_port()), size=1)
    for _ in range(2):  # its slot is given back: the next session tries again
        with pytest.raises(psycopg2.OperationalError) as raised, pool.session():
            pass
        assert not isinstance(raised.value, postgres.LoginRefused)


# --- advisory locks ----------------------------------------------------------------------------------------------

def lock_holder(pg_dsn, key: int) -> int | None:
    """The server process holding advisory lock `key` (0 <= key < 2**32), None when it is free."""
    with postgres.session(pg_dsn) as connection:
        rows = postgres.query(connection, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 "
                                          "AND objid = %s AND objsubid = 1 AND granted", (key,))
    return rows[0]["pid"] if rows else None


def a_key() -> int:
    return uuid.uuid4().int % 2**31


@given(key=st.integers(-2**63, 2**63 - 1))
@hypothesis_settings(max_examples=20)
def test_a_lock_is_held_by_one_session_at_a_time_for_any_64_bit_key(pg_dsn, key):
    with postgres.AdvisoryLocks(pg_dsn) as first, postgres.AdvisoryLocks(pg_dsn) as second:
        assert first.try_take(key)
        assert not second.try_take(key)
        first.release(key)
        assert second.try_take(key)
        assert not first.try_take(key)
        second.release(key)


def test_if_free_holds_a_free_lock_for_its_block_only(pg_dsn):
    key = a_key()
    with postgres.AdvisoryLocks(pg_dsn) as owner, postgres.AdvisoryLocks(pg_dsn) as other:
        with owner.if_free(key) as free:
            assert free and not other.try_take(key)
        assert lock_holder(pg_dsn, key) is None
        assert other.try_take(key)
        with owner.if_free(key) as free:
            assert not free
        assert not owner.try_take(key)  # the other's lock is not released by a block that did not take it
        other.release(key)


def test_locks_go_with_their_session(pg_dsn):
    key = a_key()
    died = postgres.AdvisoryLocks(pg_dsn)
    assert died.try_take(key) and died.held()
    died.close()  # as when its process dies: PostgreSQL releases the lock
    with postgres.AdvisoryLocks(pg_dsn) as next_run, next_run.if_free(key) as free:
        assert free


def test_a_session_the_server_ended_is_no_longer_held(pg_dsn):
    key = a_key()
    with postgres.AdvisoryLocks(pg_dsn) as locks:
        assert locks.try_take(key)
        pid = lock_holder(pg_dsn, key)
        with postgres.session(pg_dsn) as admin:
            assert postgres.query(admin, "SELECT pg_terminate_backend(%s) AS ended", (pid,)) == [{"ended": True}]
        deadline = time.monotonic() + 10
        while lock_holder(pg_dsn, key) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not locks.held()  # so the exhaust publishes nothing on a lease it may have lost
        assert lock_holder(pg_dsn, key) is None
