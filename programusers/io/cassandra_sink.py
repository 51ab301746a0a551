"""Writes enrollment mutations (programusers.events) into Cassandra's program_enrollment.

Each mutation is one idempotent statement stamped `USING TIMESTAMP` from the event, so a retried or
replayed write converges to the same row and an older event never overwrites a newer one. Writes go
out asynchronously, at most `concurrency` at a time per DoFn instance; a transient error is retried
with exponential backoff up to `max_attempts` tries, and a write that still fails comes back out of
the transform as a dead letter with its input's context: nothing is dropped silently. A bundle ends
only when every write of it has succeeded or been handed back.
"""
from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue
from cassandra import ConsistencyLevel, OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage, ServerError

from programusers.events import DeadLetter, EnrollmentDelete, EnrollmentUpsert
from programusers.io.cassandra import SessionDoFn, identifier
from programusers.schema import ENROLLMENT_TABLE

METRICS_NAMESPACE = "programusers.cassandra"
WRITE_FAILED = "write_failed"  # the dead-letter reason
MAX_BACKOFF_SECONDS = 30.0

# Errors worth another try: the cluster was busy, unreachable or slow. Anything else (an invalid
# query, a value Cassandra rejects, a missing keyspace) fails the same way every time.
_TRANSIENT = (
    RequestExecutionException,  # Unavailable, read/write timeouts and failures
    OperationTimedOut, NoHostAvailable, ConnectionException,
    OverloadedErrorMessage, IsBootstrappingErrorMessage, ServerError,
)
_LOG = logging.getLogger(__name__)


def upsert_cql(keyspace: str, columns: Sequence[str]) -> str:
    """INSERT of the key and `columns`, bound in that order, then the write timestamp."""
    names = ["program_id", "user_id", *(identifier(c, "column") for c in columns)]
    return (f"INSERT INTO {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))}) USING TIMESTAMP ?")


def delete_cql(keyspace: str) -> str:
    """DELETE of one row, bound as (timestamp, program_id, user_id)."""
    return (f"DELETE FROM {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} USING TIMESTAMP ? "
            "WHERE program_id = ? AND user_id = ?")


def is_transient(error: BaseException) -> bool:
    return isinstance(error, _TRANSIENT)


def backoff_seconds(attempt: int, base: float) -> float:
    """The wait after failed attempt number `attempt` (1, 2, ...): base, 2 base, 4 base, ... capped."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


@dataclass
class _Write:
    """One mutation on its way to Cassandra, with the windowed input to answer with if it fails."""
    context: Any
    mutation: EnrollmentUpsert | EnrollmentDelete
    windowed: WindowedValue
    attempts: int = 0
    future: Any = None  # the attempt in flight: anything with result()


class _WriteMutationsFn(SessionDoFn):

    def __init__(self, hosts: Sequence[str], port: int, keyspace: str, consistency: str, concurrency: int,
                 max_attempts: int, backoff: float):
        super().__init__(list(hosts), port, keyspace)
        self._consistency = ConsistencyLevel.name_to_value[consistency]
        self._concurrency, self._max_attempts, self._backoff = concurrency, max_attempts, backoff
        self._written = Metrics.counter(METRICS_NAMESPACE, "rows_written")
        self._deleted = Metrics.counter(METRICS_NAMESPACE, "rows_deleted")
        self._retries = Metrics.counter(METRICS_NAMESPACE, "write_retries")

    def setup(self):
        super().setup()
        self._statements = {}  # column set (None: delete) -> prepared statement

    def start_bundle(self):
        self._in_flight: deque[_Write] = deque()
        self._backing_off: list[tuple[float, int, _Write]] = []  # heap by due time
        self._order = itertools.count()  # tie-breaker: writes themselves do not compare

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        context, mutation = element
        self._send(_Write(context, mutation, windowed))
        yield from self._settle(self._concurrency - 1)

    def finish_bundle(self):
        yield from self._settle(0)

    def _send(self, write: _Write) -> None:
        write.attempts += 1
        try:
            write.future = self._session.execute_async(self._bind(write.mutation))
        except Exception as error:  # preparing or binding failed before anything was sent
            write.future = concurrent.futures.Future()
            write.future.set_exception(error)
        self._in_flight.append(write)

    def _bind(self, mutation: EnrollmentUpsert | EnrollmentDelete):
        if isinstance(mutation, EnrollmentDelete):
            return self._statement(None).bind(
                [mutation.timestamp_micros, mutation.program_id, mutation.user_id])
        columns = tuple(sorted(mutation.columns))
        return self._statement(columns).bind(
            [mutation.program_id, mutation.user_id, *(mutation.columns[c] for c in columns),
             mutation.timestamp_micros])

    def _statement(self, columns: tuple[str, ...] | None):
        # Partial upserts write different column sets: prepare each set once, when first seen.
        if columns not in self._statements:
            cql = delete_cql(self._keyspace) if columns is None else upsert_cql(self._keyspace, columns)
            statement = self._session.prepare(cql)
            statement.consistency_level = self._consistency
            statement.is_idempotent = True  # stamped writes: the driver may retry or speculate
            self._statements[columns] = statement
        return self._statements[columns]

    def _settle(self, limit: int):
        """Completes writes, oldest first, until at most `limit` are pending; yields the failures."""
        while len(self._in_flight) + len(self._backing_off) > limit:
            while self._backing_off and self._backing_off[0][0] <= time.monotonic():
                self._send(heapq.heappop(self._backing_off)[2])
            if not self._in_flight:
                time.sleep(max(0.0, self._backing_off[0][0] - time.monotonic()))
                continue
            write = self._in_flight.popleft()
            try:
                write.future.result()
            except Exception as error:
                if is_transient(error) and write.attempts < self._max_attempts:
                    self._retries.inc()
                    due = time.monotonic() + backoff_seconds(write.attempts, self._backoff)
                    heapq.heappush(self._backing_off, (due, next(self._order), write))
                else:
                    yield self._dead_letter(write, error)
            else:
                (self._deleted if isinstance(write.mutation, EnrollmentDelete) else self._written).inc()

    def _dead_letter(self, write: _Write, error: Exception) -> WindowedValue:
        # The error's text may quote a value: only its type goes into logs and dead letters.
        detail = f"{type(error).__name__} after {write.attempts} attempt(s)"
        _LOG.warning("Cassandra write failed for good: %s", detail)
        return write.windowed.with_value((write.context, DeadLetter(WRITE_FAILED, None, detail)))


class WriteEnrollments(beam.PTransform):
    """Writes (context, EnrollmentUpsert | EnrollmentDelete) pairs to `keyspace`.program_enrollment.

    Returns the writes that failed for good as (context, DeadLetter) pairs, reason "write_failed".
    """

    def __init__(self, hosts: Sequence[str], keyspace: str, *, port: int = 9042, consistency: str = "LOCAL_QUORUM",
                 concurrency: int = 32, max_attempts: int = 5, backoff: float = 0.2):
        super().__init__()
        if concurrency < 1 or max_attempts < 1 or backoff < 0:
            raise ValueError("concurrency and max_attempts must be at least 1, backoff not negative")
        self._fn = _WriteMutationsFn(hosts, port, keyspace, consistency, concurrency, max_attempts, backoff)

    def expand(self, mutations):
        return mutations | "Write" >> beam.ParDo(self._fn)
