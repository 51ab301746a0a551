"""PostgreSQL access for the job_request table."""
import contextlib
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


def connect(dsn: str):
    return psycopg2.connect(dsn)


@contextlib.contextmanager
def session(dsn: str):
    """A connection for a few statements: nothing idles open while a report pipeline runs for hours."""
    connection = psycopg2.connect(dsn)
    try:
        yield connection
    finally:
        connection.close()


def _run(connection, query, params=()) -> list[dict]:
    with connection, connection.cursor(cursor_factory=RealDictCursor) as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def insert_request(connection, table: str, request: JobRequest, job_id: str, submitted: datetime) -> None:
    _run(connection, sql.SQL(
        "INSERT INTO {table} (tag, request_id, job_id, status, request_data, requested_by, requested_channel, "
        "encryption_key, iteration, dt_job_submitted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)").format(
        table=sql.Identifier(table)),
        (request.tag, request.request_id, job_id, SUBMITTED, Json(request.request_data), request.requested_by,
         request.requested_channel, request.encryption_key, request.iteration, submitted))


def pending_requests(connection, table: str, job_id: str, request_id: str | None = None) -> list[JobRequest]:
    """SUBMITTED requests and FAILED ones still to retry, oldest first."""
    query = sql.SQL("SELECT {columns} FROM {table} WHERE job_id = %s AND {pending}{one} "
                    "ORDER BY dt_job_submitted, request_id").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, _REQUEST_COLUMNS)), table=sql.Identifier(table),
        pending=_PENDING, one=sql.SQL(" AND request_id = %s" if request_id else ""))
    rows = _run(connection, query, (job_id, request_id) if request_id else (job_id,))
    return [JobRequest(**{**row, "iteration": row["iteration"] or 0}) for row in rows]


def claim(connection, table: str, request: JobRequest) -> bool:
    """Moves a still-pending request to PROCESSING; False when another run got there first."""
    return bool(_run(connection, sql.SQL(
        "UPDATE {table} SET status = %s WHERE tag = %s AND request_id = %s AND {pending} RETURNING request_id").format(
        table=sql.Identifier(table), pending=_PENDING), (PROCESSING, request.tag, request.request_id)))


def mark_success(connection, table: str, request: JobRequest, download_urls: list[str], file_created: datetime,
                 completed: datetime, execution_ms: int) -> None:
    _run(connection, sql.SQL(
        "UPDATE {table} SET status = %s, download_urls = %s, dt_file_created = %s, dt_job_completed = %s, "
        "execution_time = %s, err_message = NULL WHERE tag = %s AND request_id = %s").format(
        table=sql.Identifier(table)),
        (SUCCESS, download_urls, file_created, completed, execution_ms, request.tag, request.request_id))


def mark_failed(connection, table: str, request: JobRequest, message: str, completed: datetime,
                execution_ms: int) -> None:
    _run(connection, sql.SQL(
        "UPDATE {table} SET status = %s, err_message = %s, iteration = coalesce(iteration, 0) + 1, "
        "download_urls = NULL, dt_job_completed = %s, execution_time = %s WHERE tag = %s AND request_id = %s").format(
        table=sql.Identifier(table)),
        (FAILED, message, completed, execution_ms, request.tag, request.request_id))


def request_status(connection, table: str, request_id: str) -> list[dict]:
    """The STATUS_COLUMNS of every row with this request id (one per tag)."""
    return _run(connection, sql.SQL("SELECT {columns} FROM {table} WHERE request_id = %s ORDER BY tag").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, STATUS_COLUMNS)), table=sql.Identifier(table)),
        (request_id,))
