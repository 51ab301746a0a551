"""Cassandra: a connection config, one shared session per worker process, and generic read transforms.

Nothing here knows about programs or reports: transforms/ says which tables, queries and rows (see
transforms/program_reads.py and transforms/enrollments.py); io/cassandra_sink.py is the writer.

- `CassandraConnection` knows the contact points, port, local datacenter (DC-aware load balancing),
  PasswordAuthenticator user, TLS (CA, optional client certificate, host name check) and an optional
  protocol cap; the protocol is negotiated by the driver otherwise (Cassandra 3.11/4.x speak v4, 5.0 v5).
  The password is never held by the config (which travels with the pipeline): it is read where the
  cluster is made, from `password_file` (a mounted Secret) or $PROGRAMUSERS_CASSANDRA_PASSWORD.
- `SessionDoFn`s using one connection share one Cluster per worker process (Beam's utils.shared).
- `ReadAllFromCassandra` runs one prepared query per input element (e.g. a slice of a partition) and pages
  through its rows (`pages`, a page read ahead), handing on rows or whole pages; `CassandraLookupHandler`
  (io/lookups.py's shape) reads the partitions of a batch of keys, many keys a query, queries concurrently.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import ssl
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import date

import apache_beam as beam
from apache_beam.transforms.display import HasDisplayData
from apache_beam.utils import shared
from cassandra import AuthenticationFailed
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RoundRobinPolicy,
    TokenAwarePolicy,
)
from cassandra.query import named_tuple_factory, tuple_factory
from cassandra.util import Date, OrderedMap

from programusers.io.credentials import read_secret
from programusers.io.pages import Page

__all__ = ["CassandraConnection", "CassandraLookupHandler", "ReadAllFromCassandra", "SessionDoFn", "Unavailable",
           "close_shared_sessions", "identifier", "pages", "plain_rows", "refused"]

PASSWORD_ENV = "PROGRAMUSERS_CASSANDRA_PASSWORD"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")
# How often the driver tries a host it marked down: 0.5 s, doubling to at most 2 s, for ever. The
# driver's default (1 s doubling to 10 minutes, 64 tries) would notice a restarted node minutes late.
RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS = 0.5, 2.0
# What a store that is down (or refuses us) raises when connecting: NoHostAvailable holds the per-host
# errors, AuthenticationFailed among them.
Unavailable = (NoHostAvailable, OSError)


class _NegotiationIsNormal(logging.Filter):
    """The driver starts at DataStax Enterprise's protocol versions and warns at each step down; against
    Apache Cassandra that is the negotiation we ask for (no protocol_version set), not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Downgrading core protocol version")


logging.getLogger("cassandra.cluster").addFilter(_NegotiationIsNormal())


def identifier(name: str, what: str = "identifier") -> str:
    """A keyspace or table name safe to place in CQL text (names are config, never user input)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid Cassandra {what}: {name!r}")
    return name


@dataclasses.dataclass(frozen=True)
class CassandraConnection:
    """Where a Cassandra cluster is and how to log in; hashable, so it keys the shared sessions."""
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    local_dc: str | None = None
    username: str | None = None
    password_file: str | None = None  # else $PROGRAMUSERS_CASSANDRA_PASSWORD
    tls_ca: str | None = None  # a CA file turns TLS on
    tls_cert: str | None = None  # a client certificate, for servers that require one
    tls_key: str | None = None
    tls_check_hostname: bool = True
    protocol_version: int | None = None  # None: negotiated
    request_timeout: float = 30.0

    def with_timeout(self, seconds: float) -> CassandraConnection:
        return dataclasses.replace(self, request_timeout=seconds)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_ca:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        context.check_hostname = self.tls_check_hostname
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def cluster(self, row_factory=named_tuple_factory) -> Cluster:
        """`row_factory=tuple_factory` for many small queries (the DoFns): the default builds a namedtuple
        class for every result, which costs more than a small query itself (profiled: ~60%)."""
        balancing = DCAwareRoundRobinPolicy(self.local_dc) if self.local_dc else RoundRobinPolicy()
        profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(balancing),
                                   request_timeout=self.request_timeout, row_factory=row_factory)
        password = read_secret(self.password_file, PASSWORD_ENV)
        extra = {"protocol_version": self.protocol_version} if self.protocol_version else {}
        return Cluster(list(self.hosts), port=self.port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                       reconnection_policy=ExponentialReconnectionPolicy(
                           RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS, max_attempts=None),
                       auth_provider=PlainTextAuthProvider(self.username, password or "") if self.username else None,
                       ssl_context=self._ssl_context(), **extra)

    def connect(self, keyspace: str | None = None, row_factory=named_tuple_factory) -> tuple[Cluster, Session]:
        """Raises one of Unavailable at once when no host answers (the cluster is shut down again)."""
        cluster = self.cluster(row_factory)
        try:
            return cluster, cluster.connect(keyspace)
        except BaseException:
            cluster.shutdown()  # else its threads outlive a failed connect
            raise

    @contextlib.contextmanager
    def session(self):
        """A session for a few statements (commands, the demo), shut down afterwards."""
        cluster, opened = self.connect()
        try:
            yield opened
        finally:
            cluster.shutdown()

    def ping(self) -> None:
        """Raises one of Unavailable when no host answers (or lets us in) within a few seconds."""
        cluster, _ = self.with_timeout(5.0).connect()
        cluster.shutdown()

    def describe(self) -> str:
        """For logs and messages: where, never how to log in."""
        return f"{','.join(self.hosts)}:{self.port}{' (TLS)' if self.tls_ca else ''}"


def refused(error: BaseException) -> bool:
    """Whether a connection failed on the credentials (rather than on a host that is down)."""
    errors = error.errors.values() if isinstance(error, NoHostAvailable) else [error]
    return any(isinstance(e, AuthenticationFailed) for e in errors)


class _SharedSession:
    """A Cluster and its Session, shared by the DoFns of one worker process that use one connection; shut
    down once nothing holds it. Beam keeps the last one acquired for the next DoFn, so that one lasts until
    close_shared_sessions() or the process's end."""

    def __init__(self, connection: CassandraConnection):
        # Rows come back as plain tuples, read by position.
        self.cluster, self.session = connection.connect(row_factory=tuple_factory)
        weakref.finalize(self, self.cluster.shutdown)
        _OPEN_SESSIONS.add(self)


_OPEN_SESSIONS: weakref.WeakSet[_SharedSession] = weakref.WeakSet()
_generation = 0  # Beam's tag for the shared sessions: a new one makes the next DoFn open a new session


def close_shared_sessions() -> None:
    """Shuts down this process's shared sessions, for a command whose pipelines are done (a DoFn set up
    afterwards opens a new one). Left to the interpreter's exit, a session's scheduler thread may meet the
    thread pools already stopped, and print a traceback."""
    global _generation
    with _HANDLES_LOCK:
        _generation += 1
    for shared_session in list(_OPEN_SESSIONS):
        shared_session.cluster.shutdown()


_HANDLES: dict[CassandraConnection, shared.Shared] = {}
_HANDLES_LOCK = threading.Lock()


def _handle(connection: CassandraConnection) -> shared.Shared:
    """One Shared handle per connection, made where the pipeline is built and pickled with each DoFn, so
    every DoFn of that connection acquires the same session in a worker process."""
    with _HANDLES_LOCK:
        return _HANDLES.setdefault(connection, shared.Shared())


def _acquire(handle: shared.Shared, connection: CassandraConnection) -> _SharedSession:
    """The worker process's shared session for `connection`: hold what this returns while using it."""
    return handle.acquire(lambda: _SharedSession(connection), tag=_generation)


class SessionDoFn(beam.DoFn):
    """A DoFn with the worker process's shared session for `connection`, acquired in setup() (where
    subclasses then prepare their statements).

    Args:
      connection: where the cluster is and how to log in.
    """

    def __init__(self, connection: CassandraConnection):
        self._connection = connection
        self._shared = _handle(connection)

    def display_data(self):
        return {"cassandra": self._connection.describe()}

    def setup(self):
        self._session = self._acquire_session()

    def _acquire_session(self) -> Session:
        """Raises one of Unavailable when the cluster is down (or refuses us)."""
        self._holder = _acquire(self._shared, self._connection)
        return self._holder.session

    def teardown(self):
        self._holder = self._session = None  # the last DoFn to let go shuts the cluster down


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _plain_date(value: Date) -> date:
    # Date.date() goes through a datetime and a timedelta: five times slower than this.
    return date.fromordinal(_EPOCH_ORDINAL + value.days_from_epoch)


def _plain_map(value: OrderedMap) -> dict:
    # dict(value) looks each key up, and the driver's map serializes the key for every lookup (seven
    # times slower); its (key, value) pairs are its _items (cassandra-driver is pinned in pyproject.toml).
    return dict(value._items)


# Driver values to plain Python ones (Beam pickles the elements), chosen per column from the result's types,
# not called on every value.
_TO_PLAIN = {"date": _plain_date, "map": _plain_map}


def plain_rows(column_types: Sequence) -> Callable[[Sequence], tuple]:
    """A function making a row of these CQL types plain: date -> datetime.date, map -> dict, others as
    they are (nulls stay None)."""
    converts = [(i, _TO_PLAIN[t.typename]) for i, t in enumerate(column_types) if t.typename in _TO_PLAIN]
    if not converts:
        return tuple

    def plain(row: Sequence) -> tuple:
        values = list(row)
        for i, convert in converts:
            if values[i] is not None:
                values[i] = convert(values[i])
        return tuple(values)
    return plain


def pages(session, statement, values: Sequence = ()) -> Iterator[list]:
    """The rows of a paged query, a page (a list of rows) at a time. The next page is asked for before
    this one is handed on: Cassandra reads it while the caller works on this one, where paging as
    iteration goes leaves each side waiting on the other."""
    future = session.execute_async(statement, values)
    more = True
    while more:
        page = future.result().current_rows
        more = future.has_more_pages
        if more:
            future.start_fetching_next_page()
        yield page


class _QueryFn(SessionDoFn):
    """(cql, bind values) -> the rows of the query, each statement prepared once per DoFn instance."""

    def __init__(self, connection: CassandraConnection, fetch_size: int, counter, by_page: bool):
        super().__init__(connection)
        self._fetch_size, self._rows, self._by_page = fetch_size, counter, by_page

    def setup(self):
        super().setup()
        self._prepared = {}

    def _statement(self, cql: str):
        """The prepared statement of `cql` and the function making its rows plain."""
        if cql not in self._prepared:
            statement = self._session.prepare(cql)
            statement.fetch_size = self._fetch_size
            self._prepared[cql] = statement, plain_rows([column[3] for column in statement.result_metadata])
        return self._prepared[cql]

    def process(self, query: tuple[str, Sequence]):
        cql, values = query
        statement, plain = self._statement(cql)
        for page in pages(self._session, statement, values):
            if self._rows:  # a page at a time: a long read shows progress
                self._rows.inc(len(page))
            if self._by_page:
                if page:  # the last page of a partition can be empty
                    yield Page(map(plain, page))
            else:
                yield from map(plain, page)


class ReadAllFromCassandra(beam.PTransform):
    """Queries, each a (cql, bind values) pair (e.g. a slice of a partition) -> the rows of each,
    as tuples of plain values in the query's column order. Token-aware: a partition query goes straight
    to a replica.

    Args:
      connection: where the cluster is and how to log in.
      fetch_size: rows a page.
      counter: counts the rows read as they come, a page at a time (anything with ``inc(n)``, e.g. a
        Beam counter); None counts nothing.
      by_page: hand on each page as one element, a list of its rows (a programusers.io.pages.Page), so the
        steps after the read pay Beam's per-element cost once a page instead of once a row.
    """

    def __init__(self, connection: CassandraConnection, fetch_size: int = 1000, counter=None, by_page: bool = False):
        super().__init__()
        self._connection, self._fetch_size, self._by_page = connection, fetch_size, by_page
        self._fn = _QueryFn(connection, fetch_size, counter, by_page)

    def expand(self, queries):
        read = beam.ParDo(self._fn)
        return queries | "Query" >> (read.with_output_types(Page) if self._by_page else read)

    def display_data(self):
        return {"cassandra": self._connection.describe(), "fetch_size": self._fetch_size, "by_page": self._by_page}


class CassandraLookupHandler(HasDisplayData):
    """A lookup handler (io/lookups.py): a batch of keys -> {key: its rows of `cql`} for the keys with rows,
    each row a tuple of plain values without the key. Uses the worker process's shared session.

    Many keys a query read far faster than one query per key, whose round trip costs more than the read.
    The coordinator fans an IN out to the keys' replicas, so keep it to tens of keys.

    Args:
      connection: where the cluster is and how to log in.
      cql: a query selecting the key column first and restricting it with `key IN ?`.
      keys_per_query: the keys (small partitions) one query reads; 1 gives one query per key.
      concurrency: queries in flight.
    """

    def __init__(self, connection: CassandraConnection, cql: str, keys_per_query: int = 50, concurrency: int = 16):
        self._connection, self._cql = connection, cql
        self._keys_per_query, self._concurrency = keys_per_query, concurrency
        self._shared = _handle(connection)
        self._holder = None

    def __enter__(self) -> CassandraLookupHandler:
        """Raises one of Unavailable when the cluster is down (or refuses us)."""
        self._holder = _acquire(self._shared, self._connection)
        self._query = self._holder.session.prepare(self._cql)
        self._plain = plain_rows([column[3] for column in self._query.result_metadata[1:]])
        return self

    def __call__(self, keys: list) -> dict:
        step = self._keys_per_query
        results = execute_concurrent_with_args(self._holder.session, self._query,
                                               [(keys[i:i + step],) for i in range(0, len(keys), step)],
                                               concurrency=self._concurrency, raise_on_first_error=True)
        found: dict = {}
        for _, rows in results:
            for key, *values in rows:
                found.setdefault(key, []).append(self._plain(values))
        return found

    def __exit__(self, *exc_info) -> None:
        self._holder = None  # the last user to let go shuts the cluster down

    def count_throttled(self) -> None:
        """Nothing to count: the driver's retries do not wait."""

    def display_data(self):
        return {"cassandra": self._connection.describe(), "cql": self._cql, "keys_per_query": self._keys_per_query,
                "concurrency": self._concurrency}

    def __getstate__(self):
        return {**self.__dict__, "_holder": None, "_query": None, "_plain": None}
