"""PostgreSQL access for the job_request table: requests, their claims and their leases.

A request is produced by exactly one process. Claims are row-locked (`FOR UPDATE SKIP LOCKED`), so
overlapping runs never take one request twice. While a request is PROCESSING, the process producing it
holds a session-level advisory lock keyed on the request (its lease; no column is added to the
platform's table): the lock goes with the process's connection, so a PROCESSING request whose lock is
free belongs to a process that died, and the next run reclaims it.
"""
import contextlib
import hashlib
import os
import socket
from datetime import datetime

import psycopg2
from psycopg2 import sql
from psycopg2.extras import Json, RealDictCursor

from programusers.job_requests import FAILED, MAX_ITERATIONS, PROCESSING, SUBMITTED, SUCCESS, JobRequest

_REQUEST_COLUMNS = ("tag", "request_id", "request_data", "requested_by", "requested_channel", "encryption_key",
                    "iteration")
_PENDING = sql.SQL("(status = {submitted} OR (status = {failed} AND coalesce(iteration, 0) < {max}))").format(
    submitted=sql.Literal(SUBMITTED), failed=sql.Literal(FAILED), max=sql.Literal(MAX_ITERATIONS))
# What `programusers status` shows: no request_data, requested_by or encryption_key.
STATUS_COLUMNS = ("tag", "request_id", "job_id", "status", "err_message", "download_urls", "iteration",
                  "dt_job_submitted", "dt_job_completed", "dt_file_created", "execution_time")
INTERRUPTED = "interrupted"
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


def _run(connection, query, params=()) -> list[dict]:
    with connection, connection.cursor(cursor_factory=RealDictCursor) as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def lease_key(job_id: str, tag: str, request_id: str) -> int:
    """The advisory-lock key of a request: 64 bits of a hash of its job and primary key."""
    digest = hashlib.sha256(f"{job_id}\x1f{tag}\x1f{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leases:
    """One long-lived connection whose session holds the advisory locks of the requests this process is
    producing. Session-level locks are re-entrant per session: take a key at most once at a time."""

    def __init__(self, dsn: str, job_id: str):
        self._connection = connect(dsn, **_KEEPALIVES)
        self._connection.autocommit = True
        self._job_id = job_id

    def key(self, request: JobRequest) -> int:
        return lease_key(self._job_id, request.tag, request.request_id)

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


def insert_request(connection, table: str, request: JobRequest, job_id: str, submitted: datetime) -> None:
    _run(connection, sql.SQL(
        "INSERT INTO {table} (tag, request_id, job_id, status, request_data, requested_by, requested_channel, "
        "encryption_key, iteration, dt_job_submitted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)").format(
        table=sql.Identifier(table)),
        (request.tag, request.request_id, job_id, SUBMITTED, Json(request.request_data), request.requested_by,
         request.requested_channel, request.encryption_key, request.iteration, submitted))


def _requests(connection, table: str, job_id: str, condition: sql.Composable,
              request_id: str | None) -> list[JobRequest]:
    query = sql.SQL("SELECT {columns} FROM {table} WHERE job_id = %s AND {condition}{one} "
                    "ORDER BY dt_job_submitted, request_id").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, _REQUEST_COLUMNS)), table=sql.Identifier(table),
        condition=condition, one=sql.SQL(" AND request_id = %s" if request_id else ""))
    rows = _run(connection, query, (job_id, request_id) if request_id else (job_id,))
    return [JobRequest(**{**row, "iteration": row["iteration"] or 0}) for row in rows]


def pending_requests(connection, table: str, job_id: str, request_id: str | None = None) -> list[JobRequest]:
    """SUBMITTED requests and FAILED ones still to retry, oldest first."""
    return _requests(connection, table, job_id, _PENDING, request_id)


def processing_requests(connection, table: str, job_id: str, request_id: str | None = None) -> list[JobRequest]:
    return _requests(connection, table, job_id, sql.SQL("status = {}").format(sql.Literal(PROCESSING)),
                     request_id)


def reclaim(connection, table: str, request: JobRequest, completed: datetime) -> bool:
    """An interrupted request (PROCESSING, its lease free and now held by the caller) back to FAILED
    "interrupted" with `iteration + 1`: pending again below MAX_ITERATIONS, final at it. False when it
    is no longer the PROCESSING request the caller saw."""
    return bool(_run(connection, sql.SQL(
        "UPDATE {table} SET status = %s, err_message = %s, iteration = coalesce(iteration, 0) + 1, "
        "dt_job_completed = %s WHERE tag = %s AND request_id = %s AND status = %s "
        "AND coalesce(iteration, 0) = %s RETURNING request_id").format(table=sql.Identifier(table)),
        (FAILED, INTERRUPTED, completed, request.tag, request.request_id, PROCESSING, request.iteration)))


def claim(connection, table: str, request: JobRequest) -> bool:
    """Moves a still-pending request to PROCESSING; False when another run holds or took it first."""
    return bool(_run(connection, sql.SQL(
        "UPDATE {table} SET status = %s WHERE (tag, request_id) IN (SELECT tag, request_id FROM {table} "
        "WHERE tag = %s AND request_id = %s AND {pending} FOR UPDATE SKIP LOCKED) RETURNING request_id").format(
        table=sql.Identifier(table), pending=_PENDING), (PROCESSING, request.tag, request.request_id)))


def mark_success(connection, table: str, request: JobRequest, download_urls: list[str], file_created: datetime,
                 completed: datetime, execution_ms: int) -> bool:
    """False when the request is no longer this claim's (PROCESSING at the claimed iteration)."""
    return bool(_run(connection, sql.SQL(
        "UPDATE {table} SET status = %s, download_urls = %s, dt_file_created = %s, dt_job_completed = %s, "
        "execution_time = %s, err_message = NULL WHERE tag = %s AND request_id = %s AND status = %s "
        "AND coalesce(iteration, 0) = %s RETURNING request_id").format(table=sql.Identifier(table)),
        (SUCCESS, download_urls, file_created, completed, execution_ms, request.tag, request.request_id,
         PROCESSING, request.iteration)))


def mark_failed(connection, table: str, request: JobRequest, message: str, completed: datetime,
                execution_ms: int, final: bool = False) -> bool:
    """FAILED with `iteration + 1` (retried by a later run below MAX_ITERATIONS), or with `final` straight
    to MAX_ITERATIONS: a rejection that no retry can change. False as for mark_success."""
    iteration = sql.SQL("greatest(coalesce(iteration, 0) + 1, {max})" if final else
                        "coalesce(iteration, 0) + 1").format(max=sql.Literal(MAX_ITERATIONS))
    return bool(_run(connection, sql.SQL(
        "UPDATE {table} SET status = %s, err_message = %s, iteration = {iteration}, download_urls = NULL, "
        "dt_job_completed = %s, execution_time = %s WHERE tag = %s AND request_id = %s AND status = %s "
        "AND coalesce(iteration, 0) = %s RETURNING request_id").format(
        table=sql.Identifier(table), iteration=iteration),
        (FAILED, message, completed, execution_ms, request.tag, request.request_id, PROCESSING, request.iteration)))


def request_status(connection, table: str, request_id: str) -> list[dict]:
    """The STATUS_COLUMNS of every row with this request id (one per tag)."""
    return _run(connection, sql.SQL("SELECT {columns} FROM {table} WHERE request_id = %s ORDER BY tag").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, STATUS_COLUMNS)), table=sql.Identifier(table)),
        (request_id,))
