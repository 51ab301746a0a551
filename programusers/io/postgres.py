"""PostgreSQL: connections that say whether the server refused the login or could not be reached, plain
queries, and session-level advisory locks.

Nothing here knows about report requests (programusers/report/request_store.py does).
"""
import contextlib
import os
import socket
import threading

import psycopg2
from psycopg2.extras import RealDictCursor

__all__ = ["AdvisoryLocks", "ConnectionPool", "LoginRefused", "connect", "query", "session"]

# A lease's connection idles while a report runs for hours: TCP keepalives notice a dead peer (and keep
# middleboxes from dropping the connection), so a lost lease is seen rather than assumed held.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class LoginRefused(psycopg2.OperationalError):
    """The server answered but did not let us in: the user or its password, pg_hba.conf (e.g. TLS
    required) or the database."""


def _server_answers(dsn: str) -> bool:
    """Whether a server listens where `dsn` points (any of its hosts): libpq tells a refused login from a
    server that is down only in its message text, so we ask the socket."""
    params = psycopg2.extensions.parse_dsn(dsn)
    hosts = (params.get("host") or os.environ.get("PGHOST") or "").split(",")
    ports = (params.get("port") or os.environ.get("PGPORT") or "5432").split(",")
    for i, host in enumerate(hosts):
        port = int(ports[min(i, len(ports) - 1)])
        try:
            if not host or host.startswith("/"):  # a Unix socket's folder
                with socket.socket(socket.AF_UNIX) as unix:
                    unix.settimeout(3)
                    unix.connect(os.path.join(host or "/var/run/postgresql", f".s.PGSQL.{port}"))
            else:
                socket.create_connection((host, port), timeout=3).close()
            return True
        except OSError:
            continue
    return False


def connect(dsn: str, **params):
    """A connection; raises LoginRefused when the server answered but turned the login down, else
    psycopg2.OperationalError when it could not be reached."""
    try:
        return psycopg2.connect(dsn, **params)
    except psycopg2.OperationalError as error:
        if _server_answers(dsn):
            raise LoginRefused("PostgreSQL refused the login") from error
        raise


@contextlib.contextmanager
def session(dsn: str):
    """A connection for a few statements, closed afterwards."""
    connection = connect(dsn)
    try:
        yield connection
    finally:
        connection.close()


class ConnectionPool:
    """Connections kept open for many short sessions, as a server's requests make: a new PostgreSQL
    connection is a new server process, which costs more than most queries. At most `size` are open; a
    session waits for one. A connection whose session failed is closed rather than handed out again.

    Args:
      dsn: a libpq connection string.
      size: the most connections open at once.
    """

    def __init__(self, dsn: str, size: int = 8):
        self.dsn, self._size = dsn, size
        self._idle: list = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def session(self):
        with self._slots:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None or connection.closed:
                connection = connect(self.dsn)
            try:
                yield connection
            except BaseException:
                connection.close()
                raise
            with self._lock:
                self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            for connection in self._idle:
                connection.close()
            self._idle.clear()


def query(connection, statement, params=()) -> list[dict]:
    """Runs one statement in its own transaction; its rows as dicts (none for a statement without)."""
    with connection, connection.cursor(cursor_factory=RealDictCursor) as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


class AdvisoryLocks:
    """One long-lived connection whose session holds advisory locks (64-bit keys). They go with the
    session: when the process dies, PostgreSQL releases them. Session-level locks are re-entrant per
    session: take a key at most once at a time."""

    def __init__(self, dsn: str):
        self._connection = connect(dsn, **_KEEPALIVES)
        self._connection.autocommit = True

    def try_take(self, key: int) -> bool:
        """True when the lock was free and is now ours."""
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            return cursor.fetchone()[0]

    @contextlib.contextmanager
    def if_free(self, key: int):
        """Holds the lock for the block when it is free (yields True: its owner, if any, is gone), else
        yields False; released afterwards."""
        taken = self.try_take(key)
        try:
            yield taken
        finally:
            if taken:
                self.release(key)

    def release(self, key: int) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def held(self) -> bool:
        """Whether the session (and so every lock it took) is still alive."""
        try:
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except psycopg2.Error:
            return False

    def close(self) -> None:
        self._connection.close()  # ends the session: PostgreSQL releases its locks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
