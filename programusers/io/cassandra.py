"""Cassandra access: sessions, and (see the sink and source DoFns) the tables we read and write."""
import re
from datetime import datetime

import apache_beam as beam
from apache_beam.metrics import Metrics
from cassandra.cluster import Cluster, Session, ExecutionProfile, EXEC_PROFILE_DEFAULT, NoHostAvailable
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import RoundRobinPolicy, TokenAwarePolicy
from cassandra.util import Date, OrderedMapSerializedKey

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")


def identifier(name: str, what: str = "identifier") -> str:
    """A keyspace or table name safe to place in CQL text (names are config, never user input)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid Cassandra {what}: {name!r}")
    return name


def connect(hosts: list[str], port: int = 9042, keyspace: str | None = None,
            request_timeout: float = 30.0) -> tuple[Cluster, Session]:
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
                               request_timeout=request_timeout)
    cluster = Cluster(hosts, port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return cluster, cluster.connect(keyspace)


Unavailable = (NoHostAvailable, OSError)


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


class _ReadPartitionFn(beam.DoFn):
    """Reads a whole partition of program_enrollment, `fetch_size` rows a page. The token-aware session
    sends the query straight to a replica of the partition; nothing but the partition key is queried."""

    def __init__(self, hosts: list[str], port: int, keyspace: str, fetch_size: int):
        self._hosts, self._port, self._keyspace, self._fetch_size = hosts, port, keyspace, fetch_size
        self._rows = Metrics.counter(self.__class__, "enrollments_read")

    def setup(self):
        self._cluster, self._session = connect(self._hosts, self._port)
        # Rows are read by position: unquoted CQL names come back lower-cased (program_externalid).
        table = f"{identifier(self._keyspace, 'keyspace')}.program_enrollment"
        self._query = self._session.prepare(
            f"SELECT {', '.join(ENROLLMENT_COLUMNS)} FROM {table} WHERE program_id = ?")
        self._query.fetch_size = self._fetch_size

    def process(self, program_id: str):
        for row in self._session.execute(self._query, (program_id,)):  # pages are fetched as iteration goes
            self._rows.inc()
            yield {column: _plain(value) for column, value in zip(ENROLLMENT_COLUMNS, row)}

    def teardown(self):
        if cluster := getattr(self, "_cluster", None):  # setup may have failed before connecting
            cluster.shutdown()


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
    return max(rows, key=lambda row: row.last_updated_on or datetime.min)


class _ReadConsentFn(beam.DoFn):
    """Looks up a batch of users' consent for one object with concurrent prepared queries.

    user_consent's key is (user_id, consumer_id, object_id) and the consumer is not known here, so the
    query reads each user's (small) partition and keeps the object's rows client side."""

    def __init__(self, hosts: list[str], port: int, keyspace: str, object_id: str, concurrency: int):
        self._hosts, self._port, self._keyspace = hosts, port, keyspace
        self._object_id, self._concurrency = object_id, concurrency
        self._found = Metrics.counter(self.__class__, "consents_found")

    def setup(self):
        self._cluster, self._session = connect(self._hosts, self._port)
        self._query = self._session.prepare(
            f"SELECT object_id, status, last_updated_on FROM {identifier(self._keyspace, 'keyspace')}.user_consent "
            "WHERE user_id = ?")

    def process(self, user_ids: list[str]):
        results = execute_concurrent_with_args(self._session, self._query, [(u,) for u in user_ids],
                                               concurrency=self._concurrency, raise_on_first_error=True)
        for user_id, (_, rows) in zip(user_ids, results):
            rows = [row for row in rows if row.object_id == self._object_id]
            if rows:
                self._found.inc()
                latest = _latest(rows)  # several consumers may hold one: the latest decision counts
                yield user_id, {"status": latest.status, "last_updated_on": latest.last_updated_on}

    def teardown(self):
        if cluster := getattr(self, "_cluster", None):  # setup may have failed before connecting
            cluster.shutdown()


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
