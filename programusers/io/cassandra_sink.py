"""WriteToCassandra: idempotent writes with prepared statements, bounded concurrency and retries.

What to write is given by a `Statements` object (e.g. transforms/enrollments.py's): which prepared
statement a mutation needs, its CQL, its bind values and its partition. The writes must be idempotent
(stamped `USING TIMESTAMP`), since a transient failure is retried and a replay writes again. Writes go
out asynchronously, at most `concurrency` requests at a time per DoFn instance. Mutations of one
partition are sent together as an UNLOGGED batch of at most `max_batch_bytes` of values (one round trip,
applied atomically; each statement keeps its own timestamp); a batch Cassandra rejects is sent again
statement by statement, so that only the bad mutation comes back.

Outages hold the stream; they never drop or dead-letter a write (SPEC §5, "Ingest delivery"):
- A worker that starts while Cassandra is down waits in setup() and connects again, with capped
  backoff, instead of failing its bundle.
- A write failing transiently (unavailable, timeouts, overloaded, no host, connection) is retried with
  capped exponential backoff until it succeeds, without stalling the other writes in flight. A bundle
  ends only when each of its writes succeeded (or failed for good, below): until then no offset is
  committed past it, and the runner sees backpressure.
- Each written mutation's context comes out of the transform once Cassandra acknowledged the write
  (the caller may count it as done); a permanent error (the server rejects the statement itself:
  InvalidRequest and the like) comes out on the REJECTED output, as (context, detail) with its input's
  window: the caller dead-letters it.
- `max_outage` seconds without a single successful write (bounded runs) raise CassandraUnreachable,
  which fails the job with a message naming Cassandra; without a limit (streaming) the DoFn keeps
  waiting and logs once a minute how long Cassandra has been unreachable and how many writes wait.
"""
from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue
from cassandra import ConsistencyLevel, OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage, ServerError
from cassandra.query import BatchStatement, BatchType

from programusers.io.cassandra import CassandraConnection, SessionDoFn, Unavailable, refused

__all__ = ["REJECTED", "CassandraUnreachable", "Statements", "WriteToCassandra", "backoff_seconds", "is_transient",
           "outage"]

METRICS_NAMESPACE = "programusers.cassandra"
REJECTED = "rejected"
MAX_BACKOFF_SECONDS = 5.0  # short: once Cassandra answers again, every held write goes out within seconds
REPORT_EVERY_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 10.0  # a write to a paused node fails (and is retried) after this long
# Under Cassandra's batch_size_warn_threshold (5 KiB by default), which counts the batch's mutations.
MAX_BATCH_BYTES = 4096
BATCH_ATTEMPTS = 3  # transient failures of a batch before its mutations are retried one by one

# Errors worth another try: the cluster was busy, unreachable or slow. Anything else (an invalid
# query, a value Cassandra rejects, a missing keyspace) fails the same way every time.
_TRANSIENT = (
    RequestExecutionException,  # Unavailable, read/write timeouts and failures
    OperationTimedOut, NoHostAvailable, ConnectionException, OSError,
    OverloadedErrorMessage, IsBootstrappingErrorMessage, ServerError,
)
_LOG = logging.getLogger(__name__)


class CassandraUnreachable(RuntimeError):
    """No write succeeded for longer than the run's outage limit (`--max-write-outage`)."""


def outage(error: BaseException, connection: CassandraConnection, limit: float | None) -> str | None:
    """Why a write job failed when Cassandra stayed unreachable past its outage `limit`, else None. The
    worker's CassandraUnreachable where the runner raises the worker's own error (in process); else (a
    portable runner passes it on as text only) found by asking Cassandra whether it answers now."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, CassandraUnreachable):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if limit is None:
        return None
    try:
        connection.ping()
        return None
    except Unavailable:
        return (f"Cassandra unreachable for more than --max-write-outage {limit:g} s at {connection.describe()}; "
                "none dead-lettered, no offset committed past the writes held: re-run once it answers")


class Statements(Protocol):
    """What WriteToCassandra needs to know of the mutations it writes."""

    def key(self, mutation) -> Hashable:
        """Which prepared statement the mutation needs (each is prepared once, when first needed)."""

    def cql(self, key: Hashable) -> str:
        """The CQL of that statement: idempotent, e.g. stamped USING TIMESTAMP."""

    def values(self, mutation) -> Sequence:
        """The mutation's bind values for its statement."""

    def counter(self, mutation) -> str:
        """The counter a written mutation counts under (e.g. rows_written, rows_deleted)."""

    def partition(self, mutation) -> Hashable:
        """The mutation's partition: mutations of one partition may be sent as one batch."""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, _TRANSIENT)


def backoff_seconds(attempt: int, base: float, cap: float = MAX_BACKOFF_SECONDS,
                    jitter: Callable[[], float] = random.random) -> float:
    """The wait after failed attempt number `attempt` (1, 2, ...): a step of base, 2 base, 4 base, ...
    capped, whose second half is random (`jitter()` in [0, 1)), so that the writes and workers an outage
    failed together do not all come back at once."""
    step = min(base * 2 ** min(attempt - 1, 60), cap)
    return step / 2 + step / 2 * jitter()


class _Throttle:
    """Says yes at most once per `every` seconds (thread-safe): one for the whole worker process, so
    however many DoFn instances wait, the outage is logged about once a minute."""

    def __init__(self, every: float):
        self._every, self._last, self._lock = every, None, threading.Lock()

    def ready(self, now: float) -> bool:
        with self._lock:
            if self._last is not None and now - self._last < self._every:
                return False
            self._last = now
            return True


class _OncePerKind(logging.Filter):
    """Lets each kind of driver message (logger and text template) through at most once a minute:
    during an outage the driver logs every reconnection attempt, with a traceback."""

    def __init__(self, every: float = REPORT_EVERY_SECONDS):
        super().__init__()
        self._every, self._last, self._lock = every, {}, threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = (record.name, str(record.msg)), time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self._every) < self._every:
                return False
            self._last[key] = now
            return True


_REPORT = _Throttle(REPORT_EVERY_SECONDS)
_DRIVER_LOGGERS = ("cassandra.cluster", "cassandra.pool", "cassandra.connection")


def quiet_driver_reconnection_logs() -> None:
    """Installs _OncePerKind on the driver's loggers, once per process."""
    for name in _DRIVER_LOGGERS:
        driver_logger = logging.getLogger(name)
        if not any(isinstance(f, _OncePerKind) for f in driver_logger.filters):
            driver_logger.addFilter(_OncePerKind())


class _Outage:
    """How long writes have been failing transiently with none succeeding: enforces the limit and
    logs (at most once a minute per process) that Cassandra is unreachable, with counts only, never values."""

    def __init__(self, where: str, limit: float | None, throttle: _Throttle = _REPORT):
        self._where, self._limit, self._throttle = where, limit, throttle
        self.since: float | None = None
        self._reported = False

    def failed(self, error: BaseException, waiting: int | None) -> None:
        """`waiting`: the writes held here; None while connecting, before any was sent."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        elapsed = now - self.since
        held = "connecting, no write sent yet" if waiting is None else f"{waiting} write(s) waiting here"
        if self._limit is not None and elapsed > self._limit:
            raise CassandraUnreachable(
                f"Cassandra unreachable for {elapsed:.0f} s at {self._where} ({type(error).__name__}), more than "
                f"--max-write-outage {self._limit:g} s; {held}, none dead-lettered, no offset committed past "
                f"them: re-run once it answers")
        if self._throttle.ready(now):
            self._reported = True
            _LOG.warning("Cassandra unreachable for %.0f s at %s (%s); %s, retrying",
                         elapsed, self._where, type(error).__name__, held)

    def succeeded(self) -> None:
        if self.since is not None and self._reported:
            _LOG.warning("Cassandra answering again after %.0f s", time.monotonic() - self.since)
        self.since, self._reported = None, False


@dataclass(frozen=True)
class _Item:
    """One mutation, with the windowed input to answer with."""
    context: Any
    mutation: Any
    windowed: WindowedValue


@dataclass
class _Write:
    """One request on its way to Cassandra: a mutation, or a batch of one partition's."""
    items: list[_Item]
    attempts: int = 0
    future: Any = None  # the attempt in flight: anything with result()


def value_bytes(values: Sequence) -> int:
    """About what Cassandra counts of a mutation's values against the batch size thresholds."""
    return sum(len(v) if isinstance(v, (str, bytes)) else
               sum(len(k) + len(x or "") for k, x in v.items()) if isinstance(v, dict) else 8 for v in values)


class _WriteMutationsFn(SessionDoFn):

    def __init__(self, connection: CassandraConnection, statements: Statements, consistency: str, concurrency: int,
                 backoff: float, max_backoff: float = MAX_BACKOFF_SECONDS, max_outage: float | None = None,
                 max_batch_bytes: int = MAX_BATCH_BYTES):
        super().__init__(connection.with_timeout(REQUEST_TIMEOUT_SECONDS))
        self._statements_of, self._consistency = statements, ConsistencyLevel.name_to_value[consistency]
        self._concurrency, self._backoff, self._max_backoff = concurrency, backoff, max_backoff
        self._max_outage, self._max_batch_bytes = max_outage, max_batch_bytes
        self._retries = Metrics.counter(METRICS_NAMESPACE, "write_retries")
        self._throttled = Metrics.counter(METRICS_NAMESPACE, "write_throttled_ms")  # time spent backing off

    def setup(self):
        self._prepared = {}  # statement key -> prepared statement
        self._counters = {}
        self._outage = _Outage(self._connection.describe(), self._max_outage)
        quiet_driver_reconnection_logs()
        # A worker starting during an outage waits for Cassandra here instead of failing its bundle.
        for attempt in itertools.count(1):
            try:
                self._session = self._acquire_session()
                break
            except Unavailable as error:
                if refused(error):  # a wrong login is no outage: waiting would not change it
                    raise
                self._outage.failed(error, waiting=None)
                self._sleep(backoff_seconds(attempt, self._backoff, self._max_backoff))
        self._outage.succeeded()

    def _sleep(self, seconds: float) -> None:
        """Waits out a backoff, counted as throttled time."""
        time.sleep(seconds)
        self._throttled.inc(round(seconds * 1000))

    def start_bundle(self):
        self._in_flight: deque[_Write] = deque()
        self._backing_off: list[tuple[float, int, _Write]] = []  # heap by due time
        self._order = itertools.count()  # tie-breaker: writes themselves do not compare
        self._gathering: dict[Hashable, tuple[list[_Item], int]] = {}  # partition -> (items, value bytes)

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        context, mutation = element
        partition, size = self._statements_of.partition(mutation), value_bytes(self._statements_of.values(mutation))
        items, gathered = self._gathering.pop(partition, ([], 0))
        if items and gathered + size > self._max_batch_bytes:  # it would not fit: the batch goes without it
            self._send(_Write(items))
            items, gathered = [], 0
        items.append(_Item(context, mutation, windowed))
        if gathered + size >= self._max_batch_bytes:  # full
            self._send(_Write(items))
        else:
            self._gathering[partition] = items, gathered + size
        if len(self._gathering) > self._concurrency:  # many partitions: the one least lately added to goes
            self._send(_Write(self._gathering.pop(next(iter(self._gathering)))[0]))
        yield from self._settle(self._concurrency - 1)

    def finish_bundle(self):
        for items, _ in self._gathering.values():
            self._send(_Write(items))
        self._gathering.clear()
        yield from self._settle(0)

    def _send(self, write: _Write) -> None:
        write.attempts += 1
        try:
            write.future = self._session.execute_async(self._request(write.items))
        except Exception as error:  # preparing or binding failed before anything was sent
            write.future = concurrent.futures.Future()
            write.future.set_exception(error)
        self._in_flight.append(write)

    def _request(self, items: list[_Item]):
        if len(items) == 1:
            return self._bind(items[0].mutation)
        batch = BatchStatement(BatchType.UNLOGGED, consistency_level=self._consistency)
        batch.is_idempotent = True  # every statement is stamped
        for item in items:
            batch.add(self._bind(item.mutation))
        return batch

    def _bind(self, mutation):
        return self._statement(self._statements_of.key(mutation)).bind(self._statements_of.values(mutation))

    def _statement(self, key: Hashable):
        if key not in self._prepared:
            statement = self._session.prepare(self._statements_of.cql(key))
            statement.consistency_level = self._consistency
            statement.is_idempotent = True  # stamped writes: the driver may retry or speculate
            self._prepared[key] = statement
        return self._prepared[key]

    def _count(self, mutation) -> None:
        name = self._statements_of.counter(mutation)
        if name not in self._counters:
            self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
        self._counters[name].inc()

    def _settle(self, limit: int):
        """Completes writes, oldest first, until at most `limit` are pending; yields the written contexts and,
        tagged REJECTED, the permanent failures.
        A transient failure goes back in line after its backoff, however long the outage (up to the limit)."""
        while len(self._in_flight) + len(self._backing_off) > limit:
            while self._backing_off and self._backing_off[0][0] <= time.monotonic():
                self._send(heapq.heappop(self._backing_off)[2])
            if not self._in_flight:
                self._sleep(max(0.0, self._backing_off[0][0] - time.monotonic()))
                continue
            write = self._in_flight.popleft()
            try:
                write.future.result()
            except Exception as error:
                if not is_transient(error):
                    if len(write.items) > 1:  # which mutation was it? each is tried on its own
                        for item in write.items:
                            self._send(_Write([item]))
                    else:
                        yield self._rejected(write, error)
                    continue
                self._retries.inc()
                self._outage.failed(error, waiting=len(self._in_flight) + len(self._backing_off) + 1)
                # A batch failing again and again may hold one stubborn mutation: it goes on alone, the
                # others are not held with it.
                for retry in ([_Write([item], attempts=write.attempts) for item in write.items]
                              if len(write.items) > 1 and write.attempts >= BATCH_ATTEMPTS else [write]):
                    due = time.monotonic() + backoff_seconds(retry.attempts, self._backoff, self._max_backoff)
                    heapq.heappush(self._backing_off, (due, next(self._order), retry))
            else:
                self._outage.succeeded()
                for item in write.items:
                    self._count(item.mutation)
                    yield item.windowed.with_value(item.context)

    def _rejected(self, write: _Write, error: Exception) -> beam.pvalue.TaggedOutput:
        # The error's text may quote a value: only its type goes into logs and dead letters.
        [item] = write.items
        detail = f"{type(error).__name__} after {write.attempts} attempt(s)"
        _LOG.warning("Cassandra rejected a write: %s", detail)
        return beam.pvalue.TaggedOutput(REJECTED, item.windowed.with_value((item.context, detail)))


class WriteToCassandra(beam.PTransform):
    """Writes (context, mutation) pairs with the prepared statements `statements` gives for them.

    Returns the contexts of the written mutations (main output, `written`) and, as output `rejected`,
    the writes Cassandra rejected as (context, detail) pairs, `detail` naming the error's type.
    Mutations of one partition go as UNLOGGED batches of at most `max_batch_bytes` of values (0: each
    mutation on its own).
    Transient failures are retried (backoff from `backoff` seconds, doubling, at most `max_backoff`, the
    second half of each wait random; counted as write_retries and write_throttled_ms) until they
    succeed, or until no write has succeeded for `max_outage` seconds: then the job fails with
    CassandraUnreachable. `max_outage=None` waits for ever (streaming).

    Args:
      connection: where the cluster is and how to log in.
      statements: the prepared statements and bind values of the mutations (see Statements).
      consistency: the writes' consistency level.
      concurrency: requests in flight per DoFn instance.
      backoff, max_backoff: the first and the longest wait before a retry, in seconds.
      max_outage: seconds without a successful write before the job fails; None: never.
      max_batch_bytes: the most bytes of values in one partition's batch; 0 sends each mutation alone.
    """

    def __init__(self, connection: CassandraConnection, statements: Statements, *, consistency: str = "LOCAL_QUORUM",
                 concurrency: int = 32, backoff: float = 0.2, max_backoff: float = MAX_BACKOFF_SECONDS,
                 max_outage: float | None = None, max_batch_bytes: int = MAX_BATCH_BYTES):
        super().__init__()
        if (concurrency < 1 or backoff < 0 or max_backoff < backoff or (max_outage is not None and max_outage < 0)
                or max_batch_bytes < 0):
            raise ValueError("concurrency must be at least 1; backoff, max_backoff, max_outage and max_batch_bytes "
                             "not negative, max_backoff at least backoff")
        self._fn = _WriteMutationsFn(connection, statements, consistency, concurrency, backoff, max_backoff,
                                     max_outage, max_batch_bytes)
        self._display = {"cassandra": connection.describe(), "consistency": consistency, "concurrency": concurrency,
                         "max_batch_bytes": max_batch_bytes, "max_outage": str(max_outage)}

    def expand(self, mutations):
        return mutations | "Write" >> beam.ParDo(self._fn).with_outputs(REJECTED, main="written")

    def display_data(self):
        return self._display
