"""The report's reads from Cassandra (SPEC §1, §3): whether a program asks for consent, its enrollment
partition, and its users' consent for the program, looked up by user (user_consent's partition key).
Built from the generic transforms of io/cassandra.py."""
from __future__ import annotations

import json
from datetime import datetime

import apache_beam as beam

from programusers.io.cassandra import CassandraConnection, CassandraLookupHandler, ReadAllFromCassandra, identifier
from programusers.io.pages import Page
from programusers.report import tally
from programusers.report_rows import ENROLLMENT_COLUMNS
from programusers.schema import CONSENT_TABLE, ENROLLMENT_TABLE

# The driver decodes a map<text, text> into its own map type at about four times the cost of the row's
# other columns together; as JSON text (decoded by enrollment_rows) it costs a fifth of that.
_SELECTED = ["toJson(user_locations)" if column == "user_locations" else column for column in ENROLLMENT_COLUMNS]


def _enrollments(keyspace: str) -> str:
    # Rows are read by position: unquoted CQL names come back lower-cased (program_externalid).
    return f"SELECT {', '.join(_SELECTED)} FROM {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} "


MAX_SLICES = 256  # the bounds are two-hex-digit prefixes


def user_id_slices(count: int) -> list[tuple[str, str | None]]:
    """`count` (1 to MAX_SLICES) consecutive [low, high) ranges of user ids covering every string: "" is
    the least, and the last range has no upper end. The bounds are evenly spaced hex prefixes, so the
    platform's ids (UUIDs) spread evenly; ids of any other shape are still read exactly once, in uneven
    slices."""
    if not 1 <= count <= MAX_SLICES:
        raise ValueError(f"slices must be 1 to {MAX_SLICES}, not {count}")
    bounds = [f"{i * 256 // count:02x}" for i in range(1, count)]
    return list(zip(["", *bounds], [*bounds, None]))


def slice_queries(keyspace: str, program_id: str, count: int) -> list[tuple[str, tuple]]:
    """The (cql, bind values) that read one program's partition in `count` slices of its clustering key."""
    closed = _enrollments(keyspace) + "WHERE program_id = ? AND user_id >= ? AND user_id < ?"
    open_ended = _enrollments(keyspace) + "WHERE program_id = ? AND user_id >= ?"
    return [(closed, (program_id, low, high)) if high is not None else (open_ended, (program_id, low))
            for low, high in user_id_slices(count)]


def enrollment_rows(page: list[tuple]) -> Page:
    """A page of the slice queries' rows as dicts keyed by SPEC's column names."""
    rows = Page(dict(zip(ENROLLMENT_COLUMNS, values)) for values in page)
    # One JSON array a page: half the cost of a json.loads a row. A null map is "null".
    locations = json.loads(f"[{','.join(row['user_locations'] for row in rows)}]")
    for row, located in zip(rows, locations):
        row["user_locations"] = located
    return rows


class ReadProgramEnrollments(beam.PTransform):
    """Every program_enrollment row of one program, as lists of dicts keyed by SPEC's column names, a list
    per page read (counted as enrollments_read). Only that partition is queried, in ranges of its
    clustering key.

    The partition is read in `slices` ranges of user ids, spread over the workers before they are read
    (as Beam's sources split): the rows go on where they were read, the runner never moves them. A page is
    one element: a Beam element per row cost more than the steps that work on it (issue 25)."""

    def __init__(self, connection: CassandraConnection, keyspace: str, program_id: str, fetch_size: int = 1000,
                 slices: int = 16):
        super().__init__()
        self._read = ReadAllFromCassandra(connection, fetch_size, by_page=True,
                                          counter=tally.counter(ReadProgramEnrollments, "enrollments_read"))
        self._queries = slice_queries(keyspace, program_id, slices)

    def expand(self, pbegin):
        return (pbegin
                | "Slices" >> beam.Create(self._queries)
                | "SpreadSlices" >> beam.Reshuffle()
                | "ReadSlice" >> self._read
                | "AsRows" >> beam.Map(enrollment_rows).with_output_types(Page))


def program_asks_for_consent(session, keyspace: str, program_id: str, fetch_size: int = 1000) -> bool:
    """Whether any of the program's rows asks for PII consent, which decides the report's columns (see
    transforms/report.py). Pages through that one column and stops at the first row that asks: usually
    the first. Not filtered by Cassandra (`AND pii_consent_required = true ALLOW FILTERING`): a program
    that never asks would be one read of its whole partition, whose tombstones (explicit nulls) past
    100,000 fail the read."""
    query = session.prepare(f"SELECT pii_consent_required FROM {identifier(keyspace, 'keyspace')}"
                            f".{ENROLLMENT_TABLE} WHERE program_id = ?")
    query.fetch_size = fetch_size
    return any(row[0] for row in session.execute(query, (program_id,)))


def estimated_rows(session, keyspace: str, program_id: str) -> int:
    """The program's enrollment rows, estimated from a count of those in the first of MAX_SLICES slices of
    user ids, times MAX_SLICES: for a program of a million rows, a count of some 4,000. The platform's ids
    are UUIDs, which fall evenly into the slices; ids of another shape make a rough estimate."""
    low, high = user_id_slices(MAX_SLICES)[0]
    found = session.execute(f"SELECT COUNT(*) FROM {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} "
                            "WHERE program_id = %s AND user_id >= %s AND user_id < %s", (program_id, low, high))
    return found.one()[0] * MAX_SLICES


def latest(rows):
    """Of (object_id, status, last_updated_on) rows, the one updated last: several consumers may hold a
    consent for one program, and the latest decision counts."""
    return max(rows, key=lambda row: row[2] or datetime.min)


def consent_of(rows) -> dict:
    _, status, last_updated_on = latest(rows)
    return {"status": status, "last_updated_on": last_updated_on}


def consent_query(keyspace: str) -> str:
    return (f"SELECT user_id, object_id, status, last_updated_on FROM {identifier(keyspace, 'keyspace')}"
            f".{CONSENT_TABLE} WHERE user_id IN ?")


class ConsentHandler:
    """A lookup handler (io/lookups.py): a batch of user ids -> {user_id: {status, last_updated_on}} for the
    users with a consent row for `object_id`.

    user_consent's key is (user_id, consumer_id, object_id) and the consumer is not known here, so each
    user's (small) partition is read and the object's rows are kept client side, `users_per_query`
    partitions a query (see CassandraLookupHandler), `concurrency` queries in flight."""

    def __init__(self, connection: CassandraConnection, keyspace: str, object_id: str, users_per_query: int = 50,
                 concurrency: int = 16):
        self._rows = CassandraLookupHandler(connection, consent_query(keyspace), users_per_query, concurrency)
        self._object_id = object_id

    def __enter__(self) -> ConsentHandler:
        self._rows.__enter__()
        return self

    def __call__(self, user_ids: list[str]) -> dict[str, dict]:
        found = {}
        for user_id, rows in self._rows(user_ids).items():
            if rows := [row for row in rows if row[0] == self._object_id]:
                found[user_id] = consent_of(rows)
        return found

    def __exit__(self, *exc_info) -> None:
        self._rows.__exit__(*exc_info)

    def count_throttled(self) -> None:
        self._rows.count_throttled()
