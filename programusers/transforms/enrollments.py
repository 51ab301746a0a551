"""The ingest's writes (SPEC §2): enrollment mutations as statements on program_enrollment, written with
io/cassandra_sink.py's WriteToCassandra; rejected writes become dead letters.

Upserts bind a value a column. Sending each row as one `INSERT ... JSON ? DEFAULT UNSET` bound two values
instead and made the client's binding 18 -> 8 µs a row, but under a write rate above what the stack's
Cassandra absorbs (1 GiB heap) it ran out of heap where these statements did not (README, Decisions)."""
from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam

from programusers.events import DeadLetter, EnrollmentDelete, EnrollmentUpsert, Reason
from programusers.io.cassandra import CassandraConnection, identifier
from programusers.io.cassandra_sink import REJECTED, WritePolicy, WriteToCassandra
from programusers.schema import ENROLLMENT_TABLE

_DELETE = None  # the statement key of a delete; an upsert's is its sorted column names


def upsert_cql(keyspace: str, columns: Sequence[str]) -> str:
    """INSERT of the key and `columns`, bound in that order, then the write timestamp."""
    names = ["program_id", "user_id", *(identifier(c, "column") for c in columns)]
    return (f"INSERT INTO {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))}) USING TIMESTAMP ?")


def delete_cql(keyspace: str) -> str:
    """DELETE of one row, bound as (timestamp, program_id, user_id)."""
    return (f"DELETE FROM {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} USING TIMESTAMP ? "
            "WHERE program_id = ? AND user_id = ?")


class EnrollmentStatements:
    """WriteToCassandra's Statements for EnrollmentUpsert / EnrollmentDelete. Partial upserts write
    different column sets: one prepared INSERT per set, each stamped USING TIMESTAMP from the event."""

    def __init__(self, keyspace: str):
        self._keyspace = identifier(keyspace, "keyspace")

    def key(self, mutation: EnrollmentUpsert | EnrollmentDelete):
        return _DELETE if isinstance(mutation, EnrollmentDelete) else tuple(sorted(mutation.columns))

    def cql(self, key) -> str:
        return delete_cql(self._keyspace) if key is _DELETE else upsert_cql(self._keyspace, key)

    def values(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> list:
        if isinstance(mutation, EnrollmentDelete):
            return [mutation.timestamp_micros, mutation.program_id, mutation.user_id]
        return [mutation.program_id, mutation.user_id, *(mutation.columns[c] for c in self.key(mutation)),
                mutation.timestamp_micros]

    def counter(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> str:
        return "rows_deleted" if isinstance(mutation, EnrollmentDelete) else "rows_written"

    def partition(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> str:
        return mutation.program_id


def _dead_letter(context, detail: str):
    return context, DeadLetter(Reason.WRITE_FAILED, None, detail)


class WriteEnrollments(beam.PTransform):
    """Writes (context, EnrollmentUpsert | EnrollmentDelete) pairs to `keyspace`.program_enrollment with
    `policy` (see WritePolicy); returns (the contexts written, the writes Cassandra rejected as
    (context, DeadLetter) pairs, reason "write_failed")."""

    def __init__(self, connection: CassandraConnection, keyspace: str, policy: WritePolicy = WritePolicy()):
        super().__init__()
        self._write = WriteToCassandra(connection, EnrollmentStatements(keyspace), policy)

    def expand(self, mutations):
        result = mutations | "WriteToCassandra" >> self._write
        return result.written, result[REJECTED] | "AsDeadLetters" >> beam.MapTuple(_dead_letter)
