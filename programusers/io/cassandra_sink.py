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
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import apache_beam as beam
from apache_beam.metrics import Metrics
from cassandra import ConsistencyLevel, OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage, ServerError
from cassandra.query import BatchStatement, BatchType

from programusers.io.backoff import Backoff, causes, count_wait, retry
from programusers.io.cassandra import CassandraConnection, SessionDoFn, Unavailable, refused

__all__ = ["DEFAULT_BACKOFF_SECONDS", "MAX_BACKOFF_SECONDS", "MAX_BATCH_BYTES", "REJECTED", "CassandraUnreachable",
           "Statements", "WriteToCassandra", "is_transient", "outage", "value_bytes"]

METRICS_NAMESPACE = "programusers.cassandra"
REJECTED = "rejected"
DEFAULT_BACKOFF_SECONDS = 0.5  # the first wait before a retry (ingest's --retry-backoff)
MAX_BACKOFF_SECONDS = 5.0  # short: once Cassandra answers again, every held write goes out within seconds
REPORT_EVERY_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 10.0  # a write to a paused node fails (and is retried) after this long
# About 50 of the ingest's upserts (600 bytes of values each). A batch of one partition is one mutation to
# Cassandra, applied at once and never held to batch_size_warn_threshold or _fail_threshold (5, 50 KiB),
# which count only batches across partitions (CASSANDRA-10876; the stack's 5.0 logs none). At 4 KiB (6
# upserts a batch) the stack's Cassandra, about 530 mutations a second (README), capped the ingest.
MAX_BATCH_BYTES = 32768
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
    """No write succeeded for longer than the transform's outage limit (`max_outage`)."""


def outage(error: BaseException, connection: CassandraConnection, limit: float | None) -> str | None:
    """Why a write job failed when Cassandra stayed unreachable past its outage `limit` (counts and
    addresses only), else None. The
    worker's CassandraUnreachable where the runner raises the worker's own error (in process); else (a
    portable runner passes it on as text only) found by asking Cassandra whether it answers now."""
    for cause in causes(error):
        if isinstance(cause, CassandraUnreachable):
            return str(cause)
    if limit is None:
        return None
    try:
        connection.ping()
        return None
    except Unavailable:
        return f"Cassandra unreachable for more than the outage limit of {limit:g} s at {connection.describe()}"


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

    def routing_key(self, mutation) -> bytes:
        """The mutation's partition key as Cassandra serializes it, for token-aware routing when its statement's
        bind markers do not show the key (INSERT ... JSON ?); other statements are routed by the driver."""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, _TRANSIENT)


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
                f"the outage limit of {self._limit:g} s; {held}, none rejected")
        if self._throttle.ready(now):
            self._reported = True
            _LOG.warning("Cassandra unreachable for %.0f s at %s (%s); %s, retrying",
                         elapsed, self._where, type(error).__name__, held)

    def succeeded(self) -> None:
        if self.since is not None and self._reported:
            _LOG.warning("Cassandra answering again after %.0f s", time.monotonic() - self.since)
        self.since, self._reported = None, False


@dataclass(slots=True)
class _Item:
    """One mutation, with the context to answer with, and its statement key and bind values (worked out once)."""
    context: Any
    mutation: Any
    key: Hashable
    values: Sequence


@dataclass
class _Write:
    """One request on its way to Cassandra: a mutation, or a batch of one partition's."""
    items: list[_Item]
    attempts: int = 0
    future: Any = None  # the attempt in flight: anything with result()


class _Outcome(NamedTuple):
    """A mutation settled: written (`rejected` None), or rejected for good (`rejected` names the error)."""
    context: Any
    rejected: str | None = None


@dataclass(frozen=True)
class WritePolicy:
    """How WriteToCassandra writes, checked once when made and passed whole.

    Args:
      consistency: the writes' consistency level (a name, e.g. LOCAL_QUORUM).
      concurrency: requests in flight per DoFn instance.
      backoff: the first wait before a retry, in seconds.
      max_backoff: the longest wait before a retry, in seconds.
      max_outage: seconds without a successful write before the job fails; None waits for ever (streaming).
      max_batch_bytes: the most bytes of values in one partition's batch; 0 sends each mutation alone.
    """
    consistency: str = "LOCAL_QUORUM"
    concurrency: int = 32
    backoff: float = DEFAULT_BACKOFF_SECONDS
    max_backoff: float = MAX_BACKOFF_SECONDS
    max_outage: float | None = None
    max_batch_bytes: int = MAX_BATCH_BYTES

    def __post_init__(self):
        if self.consistency not in ConsistencyLevel.name_to_value:
            raise KeyError(f"consistency: no level {self.consistency!r}")
        if (self.concurrency < 1 or self.backoff < 0 or self.max_backoff < self.backoff
                or (self.max_outage is not None and self.max_outage < 0) or self.max_batch_bytes < 0):
            raise ValueError("concurrency must be at least 1; backoff, max_backoff, max_outage and max_batch_bytes "
                             "not negative, max_backoff at least backoff")

    @property
    def consistency_level(self) -> int:
        return ConsistencyLevel.name_to_value[self.consistency]

    @property
    def retry_backoff(self) -> Backoff:
        return Backoff(self.backoff, self.max_backoff)

    def display_data(self) -> dict:
        return {"consistency": self.consistency, "concurrency": self.concurrency, "backoff": self.backoff,
                "max_backoff": self.max_backoff, "max_outage": str(self.max_outage),
                "max_batch_bytes": self.max_batch_bytes}


def value_bytes(values: Sequence) -> int:
    """About what Cassandra counts of a mutation's values against the batch size thresholds."""
    return sum(len(v) if isinstance(v, (str, bytes)) else
               sum(len(k) + len(x or "") for k, x in v.items()) if isinstance(v, dict) else 8 for v in values)


def _connect_waiting(acquire: Callable[[], Any], outage: _Outage, backoff: Backoff, throttled) -> Any:
    """`acquire()`'s session, asked again with backoff while Cassandra is unreachable (a worker starting
    during an outage waits instead of failing its bundle), until `outage`'s limit; a refused login raises
    at once. The waits count on `throttled` (anything with inc(ms))."""
    def waiting(error: Exception, seconds: float) -> None:
        outage.failed(error, waiting=None)  # raises CassandraUnreachable past the limit
        count_wait(throttled, seconds)

    # A wrong login is no outage: waiting would not change it.
    session = retry(acquire, backoff, lambda error: isinstance(error, Unavailable) and not refused(error),
                    on_wait=waiting)
    outage.succeeded()
    return session


class _Writer:
    """The sink's engine, a plain object its DoFn owns: writes mutations on `session`, at most `concurrency`
    requests in flight, one partition's mutations gathered into batches of at most `max_batch_bytes`;
    retries transient failures after `backoff` without stalling the other writes; each `put` and `flush`
    yields the _Outcomes settled meanwhile, and `flush` returns only once every write has settled.

    Counts each written mutation under its Statements counter, `write_retries`, and `write_throttled_ms`:
    the wall time during which at least one write waited out a backoff (however many waited together,
    an instant counts once, so it never exceeds the time elapsed)."""

    def __init__(self, session, statements: Statements, policy: WritePolicy, *, outage: _Outage, throttled):
        self._session, self._statements, self._consistency = session, statements, policy.consistency_level
        self._concurrency, self._backoff = policy.concurrency, policy.retry_backoff
        self._max_batch_bytes, self._outage, self._throttled = policy.max_batch_bytes, outage, throttled
        self._retries = Metrics.counter(METRICS_NAMESPACE, "write_retries")
        self._prepared = {}  # statement key -> prepared statement
        self._counters = {}
        self._order = itertools.count()  # tie-breaker: writes themselves do not compare
        self.forget()

    def forget(self) -> None:
        """Drops every write not yet settled: a bundle that failed leaves them to its retry, and its
        contexts must not come out of the next bundle."""
        self._in_flight: deque[_Write] = deque()
        self._backing_off: list[tuple[float, int, _Write]] = []  # heap by due time
        self._backing_off_since: float | None = None  # since when some write waits in the heap
        self._gathering: dict[Hashable, tuple[list[_Item], int]] = {}  # partition -> (items, value bytes)

    def put(self, context, mutation) -> Iterator[_Outcome]:
        item = _Item(context, mutation, self._statements.key(mutation), self._statements.values(mutation))
        partition, size = self._statements.partition(mutation), value_bytes(item.values)
        items, gathered = self._gathering.pop(partition, ([], 0))
        if items and gathered + size > self._max_batch_bytes:  # it would not fit: the batch goes without it
            self._send(_Write(items))
            items, gathered = [], 0
        items.append(item)
        if gathered + size >= self._max_batch_bytes:  # full
            self._send(_Write(items))
        else:
            self._gathering[partition] = items, gathered + size
        if len(self._gathering) > self._concurrency:  # many partitions: the one least lately added to goes
            self._send(_Write(self._gathering.pop(next(iter(self._gathering)))[0]))
        return self._settle(self._concurrency - 1)

    def flush(self) -> Iterator[_Outcome]:
        for items, _ in self._gathering.values():
            self._send(_Write(items))
        self._gathering.clear()
        return self._settle(0)

    def _send(self, write: _Write) -> None:
        write.attempts += 1
        try:
            write.future = self._session.execute_async(self._request(write.items))
        except Exception as error:  # preparing or binding failed before anything was sent
            write.future = concurrent.futures.Future()
            write.future.set_exception(error)
        self._in_flight.append(write)

    def _request(self, items: list[_Item]):
        statements = [self._bind(item) for item in items]
        if len(statements) == 1 and statements[0].routing_key is not None:
            return statements[0]
        batch = BatchStatement(BatchType.UNLOGGED, consistency_level=self._consistency)
        batch.is_idempotent = True  # every statement is stamped
        for statement in statements:
            batch.add(statement)
        if batch.routing_key is None:  # the driver routes by the first statement's key, which INSERT ... JSON hides
            batch.routing_key = self._statements.routing_key(items[0].mutation)
            batch.keyspace = statements[0].keyspace
        return batch

    def _bind(self, item: _Item):
        return self._statement(item.key).bind(item.values)

    def _statement(self, key: Hashable):
        if key not in self._prepared:
            statement = self._session.prepare(self._statements.cql(key))
            statement.consistency_level = self._consistency
            statement.is_idempotent = True  # stamped writes: the driver may retry or speculate
            self._prepared[key] = statement
        return self._prepared[key]

    def _count(self, items: list[_Item]) -> None:
        # A counter's inc() costs about a microsecond: one a counter a write, not one a mutation.
        for name, written in Counter(self._statements.counter(item.mutation) for item in items).items():
            if name not in self._counters:
                self._counters[name] = Metrics.counter(METRICS_NAMESPACE, name)
            self._counters[name].inc(written)

    def _back_off(self, write: _Write) -> None:
        now = time.monotonic()
        if self._backing_off_since is None:
            self._backing_off_since = now
        heapq.heappush(self._backing_off, (now + self._backoff.seconds(write.attempts), next(self._order), write))

    def _send_those_due(self) -> None:
        now = time.monotonic()
        while self._backing_off and self._backing_off[0][0] <= now:
            self._send(heapq.heappop(self._backing_off)[2])
        if not self._backing_off and self._backing_off_since is not None:
            count_wait(self._throttled, now - self._backing_off_since)
            self._backing_off_since = None

    def _settle(self, limit: int) -> Iterator[_Outcome]:
        """Completes writes, oldest first, until at most `limit` are pending.
        A transient failure goes back in line after its backoff, however long the outage (up to the limit)."""
        while len(self._in_flight) + len(self._backing_off) > limit:
            self._send_those_due()
            if not self._in_flight:
                time.sleep(max(0.0, self._backing_off[0][0] - time.monotonic()))
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
                    self._back_off(retry)
            else:
                self._outage.succeeded()
                self._count(write.items)
                for item in write.items:
                    yield _Outcome(item.context)

    @staticmethod
    def _rejected(write: _Write, error: Exception) -> _Outcome:
        # The error's text may quote a value: only its type goes into logs and dead letters.
        [item] = write.items
        detail = f"{type(error).__name__} after {write.attempts} attempt(s)"
        _LOG.warning("Cassandra rejected a write: %s", detail)
        return _Outcome(item.context, detail)


class _WriteMutationsFn(SessionDoFn):
    """(context, mutation) -> the context once written; (context, detail) on REJECTED. Owns a _Writer."""

    def __init__(self, connection: CassandraConnection, statements: Statements, policy: WritePolicy):
        super().__init__(connection.with_timeout(REQUEST_TIMEOUT_SECONDS))
        self._statements, self._policy = statements, policy
        self._throttled = Metrics.counter(METRICS_NAMESPACE, "write_throttled_ms")

    def setup(self):
        quiet_driver_reconnection_logs()
        outage = _Outage(self._connection.describe(), self._policy.max_outage)
        self._session = _connect_waiting(self._acquire_session, outage, self._policy.retry_backoff, self._throttled)
        self._writer = _Writer(self._session, self._statements, self._policy, outage=outage, throttled=self._throttled)

    def start_bundle(self):
        self._writer.forget()

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        context, mutation = element
        yield from self._outputs(self._writer.put(windowed.with_value(context), mutation))

    def finish_bundle(self):
        yield from self._outputs(self._writer.flush())

    @staticmethod
    def _outputs(outcomes: Iterator[_Outcome]):
        """The writer's contexts are the inputs' windowed values: each answer keeps its input's window."""
        for windowed, rejected in outcomes:
            if rejected is None:
                yield windowed
            else:
                yield beam.pvalue.TaggedOutput(REJECTED, windowed.with_value((windowed.value, rejected)))

    def teardown(self):
        self._writer = None
        super().teardown()


class WriteToCassandra(beam.PTransform):
    """Writes (context, mutation) pairs with the prepared statements `statements` gives for them.

    Returns the contexts of the written mutations (main output, `written`) and, as output `rejected`,
    the writes Cassandra rejected as (context, detail) pairs, `detail` naming the error's type.
    Mutations of one partition go as UNLOGGED batches of at most `policy.max_batch_bytes` of values.
    Transient failures are retried (with Backoff's rule: from `policy.backoff` seconds, doubling, at most
    `policy.max_backoff`, the second half of each wait random) until they succeed, or until no write has
    succeeded for `policy.max_outage` seconds: then the job fails with CassandraUnreachable.
    Counters: `write_retries`; `write_throttled_ms`, the wall time during which some write of a DoFn
    instance waited out a backoff, or the instance waited to connect.

    Args:
      connection: where the cluster is and how to log in.
      statements: the prepared statements and bind values of the mutations (see Statements).
      policy: consistency, requests in flight, batch size, retries and outage limit (see WritePolicy).
    """

    def __init__(self, connection: CassandraConnection, statements: Statements, policy: WritePolicy = WritePolicy()):
        super().__init__()
        self._fn = _WriteMutationsFn(connection, statements, policy)
        self._display = {"cassandra": connection.describe(), "statements": type(statements).__name__,
                         **policy.display_data()}

    def expand(self, mutations):
        return mutations | "Write" >> beam.ParDo(self._fn).with_outputs(REJECTED, main="written")

    def display_data(self):
        return self._display
