"""The job_request table (SPEC §3, §5): a report request's row from its submission to its outcome, and the
leases of the requests this process produces.

A request is produced by exactly one process. Claims are row-locked (`FOR UPDATE SKIP LOCKED`), so
overlapping runs never take one request twice. While a request is PROCESSING, the process producing it
holds a session-level advisory lock keyed on the request (its lease; no column is added to the
platform's table): the lock goes with the process's connection, so a PROCESSING request whose lock is
free belongs to a process that died, and the next run reclaims it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from psycopg2 import sql
from psycopg2.extras import Json

from programusers.io import postgres
from programusers.report.job_request import (
    FAILED,
    JOB_ID,
    MAX_ITERATIONS,
    PROCESSING,
    SUBMITTED,
    SUCCESS,
    JobRequest,
)

_REQUEST_COLUMNS = ("tag", "request_id", "request_data", "requested_by", "requested_channel", "encryption_key",
                    "iteration")
_PENDING = sql.SQL("(status = {submitted} OR (status = {failed} AND coalesce(iteration, 0) < {max}))").format(
    submitted=sql.Literal(SUBMITTED), failed=sql.Literal(FAILED), max=sql.Literal(MAX_ITERATIONS))
_THIS_CLAIM = sql.SQL("tag = %s AND request_id = %s AND status = %s AND coalesce(iteration, 0) = %s")
# What `programusers status` shows: no request_data, requested_by or encryption_key.
STATUS_COLUMNS = ("tag", "request_id", "job_id", "status", "err_message", "download_urls", "iteration",
                  "dt_job_submitted", "dt_job_completed", "dt_file_created", "execution_time")
INTERRUPTED = "interrupted"
# What the request API shows of a job: every column but the encryption key and the batch bookkeeping.
JOB_COLUMNS = ("tag", "request_id", "job_id", "status", "request_data", "requested_by", "requested_channel",
               "dt_job_submitted", "download_urls", "dt_file_created", "dt_job_completed", "execution_time",
               "err_message", "iteration")
_JOB_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, JOB_COLUMNS))


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # job_request's timestamps are UTC, zoneless


def lease_key(request: JobRequest) -> int:
    """The advisory-lock key of a request: 64 bits of a hash of its job and primary key."""
    digest = hashlib.sha256(f"{JOB_ID}\x1f{request.tag}\x1f{request.request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _this_claim(request: JobRequest) -> tuple:
    """The values of _THIS_CLAIM: the request as this process claimed it (PROCESSING at its iteration)."""
    return request.tag, request.request_id, PROCESSING, request.iteration


class RequestStore:
    """The report requests of one job_request `table`, at the PostgreSQL `dsn`.

    Each call runs on a connection of its own, closed afterwards, so a PostgreSQL outage costs the call,
    not the run. With `leases`, the store also holds one long-lived session for the leases of the requests
    it claims (connected now; closed with the store, which releases them): the exhaust's store.
    """

    def __init__(self, dsn: str, table: str, *, leases: bool = False, pool: postgres.ConnectionPool | None = None):
        self.dsn, self.table, self._pool = dsn, table, pool
        self._leases = postgres.AdvisoryLocks(dsn) if leases else None

    def _session(self):
        """A connection for a few statements: the pool's when there is one (a server), else a new one."""
        return self._pool.session() if self._pool else postgres.session(self.dsn)

    def _run(self, statement: sql.Composable, params: tuple = (), connection=None) -> list[dict]:
        if connection is not None:
            return postgres.query(connection, statement, params)
        with self._session() as connection:
            return postgres.query(connection, statement, params)

    def _sql(self, text: str, **parts) -> sql.Composed:
        return sql.SQL(text).format(table=sql.Identifier(self.table), **parts)

    # --- submit and status ---------------------------------------------------------------------------

    def insert(self, request: JobRequest) -> None:
        """Records a request as SUBMITTED now."""
        self._run(self._sql(
            "INSERT INTO {table} (tag, request_id, job_id, status, request_data, requested_by, requested_channel, "
            "encryption_key, iteration, dt_job_submitted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"),
            (request.tag, request.request_id, JOB_ID, SUBMITTED, Json(request.request_data), request.requested_by,
             request.requested_channel, request.encryption_key, request.iteration, utcnow()))

    def submit(self, request: JobRequest) -> tuple[dict, str]:
        """The platform API's submit: records a new request as SUBMITTED; a FAILED one with the same (tag,
        request_id) goes back to SUBMITTED with a new dt_job_submitted, its iteration kept; any other is
        left as it is. Returns the row (JOB_COLUMNS) and what happened: created, resubmitted or existing."""
        with self._session() as connection:
            if self._run(self._sql(
                    "INSERT INTO {table} (tag, request_id, job_id, status, request_data, requested_by, "
                    "requested_channel, encryption_key, iteration, dt_job_submitted) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tag, request_id) DO NOTHING "
                    "RETURNING request_id"),
                    (request.tag, request.request_id, JOB_ID, SUBMITTED, Json(request.request_data),
                     request.requested_by, request.requested_channel, request.encryption_key, 0, utcnow()),
                    connection):
                outcome = "created"
            elif self._run(self._sql("UPDATE {table} SET status = %s, dt_job_submitted = %s WHERE tag = %s AND "
                                     "request_id = %s AND job_id = %s AND status = %s RETURNING request_id"),
                           (SUBMITTED, utcnow(), request.tag, request.request_id, JOB_ID, FAILED), connection):
                outcome = "resubmitted"
            else:
                outcome = "existing"
            return self.job(request.tag, request.request_id, connection), outcome

    def job(self, tag: str, request_id: str, connection=None) -> dict | None:
        """The JOB_COLUMNS of one request, None when there is none."""
        rows = self._run(self._sql("SELECT {columns} FROM {table} WHERE tag = %s AND request_id = %s AND job_id = %s",
                                   columns=_JOB_COLUMNS), (tag, request_id, JOB_ID), connection)
        return rows[0] if rows else None

    def jobs(self, tag: str, requested_by: str | None, limit: int) -> list[dict]:
        """The JOB_COLUMNS of a tag's requests, newest first; only `requested_by`'s unless None."""
        by = sql.SQL(" AND requested_by = %s" if requested_by is not None else "")
        params = (tag, JOB_ID, *((requested_by,) if requested_by is not None else ()), limit)
        return self._run(self._sql("SELECT {columns} FROM {table} WHERE tag = %s AND job_id = %s{by} "
                                   "ORDER BY dt_job_submitted DESC, request_id LIMIT %s", columns=_JOB_COLUMNS, by=by),
                         params)

    def status(self, request_id: str) -> list[dict]:
        """The STATUS_COLUMNS of every row with this request id (one per tag)."""
        return self._run(self._sql("SELECT {columns} FROM {table} WHERE request_id = %s ORDER BY tag",
                                   columns=sql.SQL(", ").join(map(sql.Identifier, STATUS_COLUMNS))), (request_id,))

    # --- the exhaust ---------------------------------------------------------------------------------

    def _requests(self, condition: sql.Composable, request_id: str | None, connection=None) -> list[JobRequest]:
        query = self._sql("SELECT {columns} FROM {table} WHERE job_id = %s AND {condition}{one} "
                          "ORDER BY dt_job_submitted, request_id",
                          columns=sql.SQL(", ").join(map(sql.Identifier, _REQUEST_COLUMNS)), condition=condition,
                          one=sql.SQL(" AND request_id = %s" if request_id else ""))
        rows = self._run(query, (JOB_ID, request_id) if request_id else (JOB_ID,), connection)
        return [JobRequest(**{**row, "iteration": row["iteration"] or 0}) for row in rows]

    def pending(self, request_id: str | None = None) -> list[JobRequest]:
        """SUBMITTED requests and FAILED ones still to retry (or the one `request_id` names), oldest first."""
        return self._requests(_PENDING, request_id)

    def _set(self, connection, request: JobRequest, assignments: str, values: tuple, **parts) -> bool:
        """Sets `assignments` on a request still as this store claimed it (PROCESSING at its iteration);
        False when it no longer is."""
        statement = self._sql("UPDATE {table} SET {assignments} WHERE {claimed} RETURNING request_id",
                              assignments=sql.SQL(assignments).format(**parts), claimed=_THIS_CLAIM)
        return bool(self._run(statement, (*values, *_this_claim(request)), connection))

    def reclaim_interrupted(self, request_id: str | None = None) -> Iterator[JobRequest]:
        """PROCESSING requests whose lease is free were left by a process that died: FAILED "interrupted",
        iteration + 1, so they are pending again (or final at MAX_ITERATIONS). Yields each as it was, once
        its row is updated (a caller logs it then, even if PostgreSQL fails on the next)."""
        with self._session() as connection:
            processing = sql.SQL("status = {}").format(sql.Literal(PROCESSING))
            for request in self._requests(processing, request_id, connection):
                with self.if_free(lease_key(request)) as dead:  # else its process is alive
                    if dead and self._set(connection, request, "status = %s, err_message = %s, iteration = "
                                          "coalesce(iteration, 0) + 1, dt_job_completed = %s",
                                          (FAILED, INTERRUPTED, utcnow())):
                        yield request

    def claim(self, request: JobRequest) -> bool:
        """Takes the request's lease and moves it, still pending, to PROCESSING; False (and no lease held)
        when another live process holds it or took it first."""
        key = lease_key(request)
        if not self._leases.try_take(key):
            return False  # another live process is producing it
        claimed = False
        try:
            claimed = bool(self._run(self._sql(
                "UPDATE {table} SET status = %s WHERE (tag, request_id) IN (SELECT tag, request_id FROM {table} "
                "WHERE tag = %s AND request_id = %s AND {pending} FOR UPDATE SKIP LOCKED) RETURNING request_id",
                pending=_PENDING), (PROCESSING, request.tag, request.request_id)))
        finally:
            if not claimed:  # also when the statement failed: the lease goes with the claim
                self._leases.release(key)
        return claimed

    def release(self, request: JobRequest) -> None:
        """Releases the lease of a request claimed by this store."""
        self._leases.release(lease_key(request))

    def if_free(self, key: int) -> AbstractContextManager[bool]:
        """Holds the lease `key` for a block when it is free (yields True: its owner, if any, is gone), else
        yields False."""
        return self._leases.if_free(key)

    def holds_leases(self) -> bool:
        """Whether the leases' session (and so every lease taken) is still alive."""
        return self._leases.held()

    def mark_success(self, requests: Iterable[JobRequest], *, download_urls: list[str], file_created: datetime,
                     completed: datetime, execution_ms: int) -> int:
        """Claimed requests -> SUCCESS; returns how many were still this store's claims."""
        with self._session() as connection:
            return sum(self._set(connection, request, "status = %s, download_urls = %s, dt_file_created = %s, "
                                 "dt_job_completed = %s, execution_time = %s, err_message = NULL",
                                 (SUCCESS, download_urls, file_created, completed, execution_ms))
                       for request in requests)

    def mark_failed(self, requests: Iterable[JobRequest], *, message: str, completed: datetime, execution_ms: int,
                    final: bool = False) -> int:
        """Claimed requests -> FAILED with `iteration + 1` (retried by a later run below MAX_ITERATIONS), or
        with `final` straight to MAX_ITERATIONS: a rejection that no retry can change. Returns how many were
        still this store's claims."""
        iteration = sql.SQL("greatest(coalesce(iteration, 0) + 1, {max})" if final else
                            "coalesce(iteration, 0) + 1").format(max=sql.Literal(MAX_ITERATIONS))
        with self._session() as connection:
            return sum(self._set(connection, request, "status = %s, err_message = %s, iteration = {iteration}, "
                                 "download_urls = NULL, dt_job_completed = %s, execution_time = %s",
                                 (FAILED, message, completed, execution_ms), iteration=iteration)
                       for request in requests)

    def close(self) -> None:
        if self._leases is not None:
            self._leases.close()  # ends the leases' session: PostgreSQL releases them

    def __enter__(self) -> RequestStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
