"""The job_request table (SPEC §3): pending requests, their claims, outcomes and leases.

A request is produced by exactly one process. Claims are row-locked (`FOR UPDATE SKIP LOCKED`), so
overlapping runs never take one request twice. While a request is PROCESSING, the process producing it
holds a session-level advisory lock keyed on the request (its lease; no column is added to the
platform's table): the lock goes with the process's connection, so a PROCESSING request whose lock is
free belongs to a process that died, and the next run reclaims it.
"""
import hashlib
from datetime import datetime

from psycopg2 import sql
from psycopg2.extras import Json

from programusers.io.postgres import AdvisoryLocks
from programusers.io.postgres import query as _run
from programusers.report.job_request import FAILED, MAX_ITERATIONS, PROCESSING, SUBMITTED, SUCCESS, JobRequest

_REQUEST_COLUMNS = ("tag", "request_id", "request_data", "requested_by", "requested_channel", "encryption_key",
                    "iteration")
_PENDING = sql.SQL("(status = {submitted} OR (status = {failed} AND coalesce(iteration, 0) < {max}))").format(
    submitted=sql.Literal(SUBMITTED), failed=sql.Literal(FAILED), max=sql.Literal(MAX_ITERATIONS))
# What `programusers status` shows: no request_data, requested_by or encryption_key.
STATUS_COLUMNS = ("tag", "request_id", "job_id", "status", "err_message", "download_urls", "iteration",
                  "dt_job_submitted", "dt_job_completed", "dt_file_created", "execution_time")
INTERRUPTED = "interrupted"


def lease_key(job_id: str, tag: str, request_id: str) -> int:
    """The advisory-lock key of a request: 64 bits of a hash of its job and primary key."""
    digest = hashlib.sha256(f"{job_id}\x1f{tag}\x1f{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leases(AdvisoryLocks):
    """The advisory locks of the requests this process is producing, one per request."""

    def __init__(self, dsn: str, job_id: str):
        super().__init__(dsn)
        self._job_id = job_id

    def key(self, request: JobRequest) -> int:
        return lease_key(self._job_id, request.tag, request.request_id)


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
