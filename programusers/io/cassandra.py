"""Cassandra access: sessions, and (see the sink and source DoFns) the tables we read and write."""
import contextlib
import re
from datetime import datetime

import apache_beam as beam
from apache_beam.metrics import Metrics
from cassandra.cluster import Cluster, Session, ExecutionProfile, EXEC_PROFILE_DEFAULT, NoHostAvailable
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy, TokenAwarePolicy
from cassandra.query import named_tuple_factory, tuple_factory
from cassandra.util import Date, OrderedMapSerializedKey

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")


def identifier(name: str, what: str = "identifier") -> str:
    """A keyspace or table name safe to place in CQL text (names are config, never user input)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid Cassandra {what}: {name!r}")
    return name


# How often the driver tries a host it marked down: 0.5 s, doubling to at most 2 s, for ever. The
# driver's default (1 s doubling to 10 minutes, 64 tries) would notice a restarted node minutes late.
RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS = 0.5, 2.0


def connect(hosts: list[str], port: int = 9042, keyspace: str | None = None,
            request_timeout: float = 30.0, row_factory=named_tuple_factory) -> tuple[Cluster, Session]:
    """`row_factory=tuple_factory` for many small queries: the default builds a namedtuple class for
    every result, which costs more than the query itself (profiled: ~60% of a per-user lookup).
    Raises one of Unavailable at once when no host answers (the cluster is shut down again)."""
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
                               request_timeout=request_timeout, row_factory=row_factory)
    cluster = Cluster(hosts, port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                      reconnection_policy=ExponentialReconnectionPolicy(
                          RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS, max_attempts=None))
    try:
        return cluster, cluster.connect(keyspace)
    except BaseException:
        cluster.shutdown()  # else its threads outlive a failed connect
        raise


Unavailable = (NoHostAvailable, OSError)


@contextlib.contextmanager
def session(hosts: list[str], port: int = 9042):
    """A session for a few statements (CLI commands, the demo), shut down afterwards."""
    cluster, opened = connect(hosts, port)
    try:
        yield opened
    finally:
        cluster.shutdown()


def ping(hosts: list[str], port: int = 9042) -> None:
    """Raises one of Unavailable when no host answers within a few seconds."""
    cluster, _ = connect(hosts, port, request_timeout=5.0)
    cluster.shutdown()


ENROLLMENT_COLUMNS = ("program_id", "program_externalId", "program_name", "pii_consent_required", "user_id",
                      "user_locations", "organisation_id", "organisation_name", "user_sub_type", "user_type",
                      "created_at", "updated_at")


def _plain(value):
    """Driver types to plain Python ones (Beam pickles the elements): Date -> date, map -> dict."""
    if isinstance(value, Date):
        return value.date()
    if isinstance(value, OrderedMapSerializedKey):
        return dict(value)
    return value


class SessionDoFn(beam.DoFn):
    """A DoFn with one Cassandra session per instance: opened in setup(), where subclasses then prepare
    their statements, and shut down in teardown(). Rows come back as plain tuples, read by position:
    cheaper than the driver's default of a namedtuple class per result."""

    def __init__(self, hosts: list[str], port: int, keyspace: str):
        self._hosts, self._port, self._keyspace = hosts, port, keyspace

    def setup(self):
        self._cluster, self._session = self._connect()

    def _connect(self):
        return connect(self._hosts, self._port, row_factory=tuple_factory)

    def teardown(self):
        if cluster := getattr(self, "_cluster", None):  # setup may have failed before connecting
            cluster.shutdown()


class _ReadPartitionFn(SessionDoFn):
    """Reads a whole partition of program_enrollment, `fetch_size` rows a page. The token-aware session
    sends the query straight to a replica of the partition; nothing but the partition key is queried."""

    def __init__(self, hosts: list[str], port: int, keyspace: str, fetch_size: int):
        super().__init__(hosts, port, keyspace)
        self._fetch_size = fetch_size
        self._rows = Metrics.counter(self.__class__, "enrollments_read")

    def setup(self):
        super().setup()
        # Rows are read by position: unquoted CQL names come back lower-cased (program_externalid).
        table = f"{identifier(self._keyspace, 'keyspace')}.program_enrollment"
        self._query = self._session.prepare(
            f"SELECT {', '.join(ENROLLMENT_COLUMNS)} FROM {table} WHERE program_id = ?")
        self._query.fetch_size = self._fetch_size

    def process(self, program_id: str):
        for row in self._session.execute(self._query, (program_id,)):  # pages are fetched as iteration goes
            self._rows.inc()
            yield {column: _plain(value) for column, value in zip(ENROLLMENT_COLUMNS, row)}


class ReadProgramEnrollments(beam.PTransform):
    """Every program_enrollment row of one program, as dicts keyed by SPEC's column names."""

    def __init__(self, hosts: list[str], port: int, keyspace: str, program_id: str, fetch_size: int = 1000):
        super().__init__()
        self._fn = _ReadPartitionFn(hosts, port, keyspace, fetch_size)
        self._program_id = program_id

    def expand(self, pbegin):
        return (pbegin
                | "Program" >> beam.Create([self._program_id])
                | "ReadPartition" >> beam.ParDo(self._fn)
                # One reader pages through the partition; spread its rows over the workers.
                | "Spread" >> beam.Reshuffle())


def _latest(rows):
    """The row (object_id, status, last_updated_on) updated last."""
    return max(rows, key=lambda row: row[2] or datetime.min)


class _ReadConsentFn(SessionDoFn):
    """Looks up a batch of users' consent for one object with concurrent prepared queries.

    user_consent's key is (user_id, consumer_id, object_id) and the consumer is not known here, so the
    query reads each user's (small) partition and keeps the object's rows client side."""


    def __init__(self, hosts: list[str], port: int, keyspace: str, object_id: str, concurrency: int):
        super().__init__(hosts, port, keyspace)
        self._object_id, self._concurrency = object_id, concurrency
        self._found = Metrics.counter(self.__class__, "consents_found")

    def setup(self):
        super().setup()
        self._query = self._session.prepare(
            f"SELECT object_id, status, last_updated_on FROM {identifier(self._keyspace, 'keyspace')}.user_consent "
            "WHERE user_id = ?")

    def process(self, user_ids: list[str]):
        results = execute_concurrent_with_args(self._session, self._query, [(u,) for u in user_ids],
                                               concurrency=self._concurrency, raise_on_first_error=True)
        for user_id, (_, rows) in zip(user_ids, results):
            rows = [row for row in rows if row[0] == self._object_id]
            if rows:
                self._found.inc()
                _, status, last_updated_on = _latest(rows)  # several consumers may hold one: the latest counts
                yield user_id, {"status": status, "last_updated_on": last_updated_on}


class ReadConsent(beam.PTransform):
    """user ids -> (user_id, {status, last_updated_on}) for the users with a consent row for `object_id`."""

    def __init__(self, hosts: list[str], port: int, keyspace: str, object_id: str, batch_size: int = 500,
                 concurrency: int = 64):
        super().__init__()
        self._fn = _ReadConsentFn(hosts, port, keyspace, object_id, concurrency)
        self._batch_size = batch_size

    def expand(self, user_ids):
        return (user_ids
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "LookUp" >> beam.ParDo(self._fn))


# Murmur3Partitioner's tokens: a range (start, end] with start = MIN_TOKEN covers from the lowest one.
MIN_TOKEN, MAX_TOKEN = -2**63, 2**63 - 1


def token_ranges(splits: int) -> list[tuple[int, int]]:
    """The whole ring as `splits` consecutive (start, end] ranges."""
    bounds = [MIN_TOKEN + (MAX_TOKEN - MIN_TOKEN) * i // splits for i in range(splits)] + [MAX_TOKEN]
    return list(zip(bounds, bounds[1:]))


class _ScanConsentFn(SessionDoFn):
    """Reads one token range of user_consent (a plain range read, no ALLOW FILTERING) and keeps the rows
    of one object, client side."""


    def __init__(self, hosts: list[str], port: int, keyspace: str, object_id: str, fetch_size: int):
        super().__init__(hosts, port, keyspace)
        self._object_id, self._fetch_size = object_id, fetch_size
        self._scanned = Metrics.counter(self.__class__, "consent_rows_scanned")

    def setup(self):
        super().setup()
        self._query = self._session.prepare(
            f"SELECT user_id, object_id, status, last_updated_on FROM "
            f"{identifier(self._keyspace, 'keyspace')}.user_consent WHERE token(user_id) > ? AND token(user_id) <= ?")
        self._query.fetch_size = self._fetch_size

    def process(self, token_range: tuple[int, int]):
        scanned = 0
        for user_id, object_id, status, last_updated_on in self._session.execute(self._query, token_range):
            scanned += 1
            if object_id == self._object_id:
                yield user_id, (object_id, status, last_updated_on)
        self._scanned.inc(scanned)


class _KeepRequestedFn(beam.DoFn):
    def __init__(self):
        self._found = Metrics.counter(self.__class__, "consents_found")

    def process(self, joined):
        user_id, sides = joined
        if sides["requested"] and sides["consent"]:
            self._found.inc()
            _, status, last_updated_on = _latest(sides["consent"])
            yield user_id, {"status": status, "last_updated_on": last_updated_on}


class ScanConsent(beam.PTransform):
    """ReadConsent's contract (user ids -> (user_id, {status, last_updated_on})) by scanning the whole
    user_consent table in `splits` token ranges instead of one query per user.

    A scan reads every consent row of every program, so it pays off only when the program's users are a
    large share of the table: a per-user lookup cost 10-16x a scanned row in bench/exhaust.py, so scan
    when the users to look up exceed ~1/10 of user_consent's rows (e.g. a state-wide program on a table
    holding few programs). The platform's shared table usually holds many programs: lookups stay the default.
    """

    def __init__(self, hosts: list[str], port: int, keyspace: str, object_id: str, splits: int = 32,
                 fetch_size: int = 5000):
        super().__init__()
        self._fn = _ScanConsentFn(hosts, port, keyspace, object_id, fetch_size)
        self._splits = splits

    def expand(self, user_ids):
        scanned = (user_ids.pipeline
                   | "TokenRanges" >> beam.Create(token_ranges(self._splits))
                   | "SpreadRanges" >> beam.Reshuffle()
                   | "Scan" >> beam.ParDo(self._fn))
        requested = user_ids | "Requested" >> beam.Map(lambda user_id: (user_id, None))
        # Only the requested users' consent goes on (their profiles alone are read, as with lookups).
        return ({"requested": requested, "consent": scanned}
                | "JoinRequested" >> beam.CoGroupByKey()
                | "KeepRequested" >> beam.ParDo(_KeepRequestedFn()))
