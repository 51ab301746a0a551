"""The ingest's writes (SPEC §2): enrollment mutations as statements on program_enrollment, written with
io/cassandra_sink.py's WriteToCassandra; rejected writes become dead letters."""
from __future__ import annotations

import apache_beam as beam
import orjson

from programusers.events import DeadLetter, EnrollmentDelete, EnrollmentUpsert, Reason
from programusers.io.cassandra import CassandraConnection, identifier
from programusers.io.cassandra_sink import REJECTED, WritePolicy, WriteToCassandra
from programusers.schema import ENROLLMENT_TABLE

UPSERT, DELETE = "upsert", "delete"  # the statement keys


def upsert_cql(keyspace: str) -> str:
    """INSERT of a row given as JSON, bound as (row JSON, write timestamp); the columns the JSON leaves out
    are left as they are (DEFAULT UNSET), so a partial upsert writes only its own columns."""
    return (f"INSERT INTO {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} JSON ? DEFAULT UNSET "
            "USING TIMESTAMP ?")


def delete_cql(keyspace: str) -> str:
    """DELETE of one row, bound as (timestamp, program_id, user_id)."""
    return (f"DELETE FROM {identifier(keyspace, 'keyspace')}.{ENROLLMENT_TABLE} USING TIMESTAMP ? "
            "WHERE program_id = ? AND user_id = ?")


def row_json(upsert: EnrollmentUpsert) -> str:
    """The upsert's key and columns as the JSON upsert_cql binds (a value, so no name in it reaches the CQL).
    One text instead of a value a column: the driver binds two values instead of serializing each column (the
    map of locations most of all), and Cassandra reads the text. Dates become ISO text, as CQL takes them."""
    return orjson.dumps({"program_id": upsert.program_id, "user_id": upsert.user_id, **upsert.columns}).decode()


class EnrollmentStatements:
    """WriteToCassandra's Statements for EnrollmentUpsert / EnrollmentDelete, each stamped USING TIMESTAMP
    from its event: one prepared INSERT ... JSON for every upsert, whatever columns it carries, and one DELETE."""

    def __init__(self, keyspace: str):
        self._keyspace = identifier(keyspace, "keyspace")

    def key(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> str:
        return DELETE if isinstance(mutation, EnrollmentDelete) else UPSERT

    def cql(self, key: str) -> str:
        return delete_cql(self._keyspace) if key == DELETE else upsert_cql(self._keyspace)

    def values(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> list:
        if isinstance(mutation, EnrollmentDelete):
            return [mutation.timestamp_micros, mutation.program_id, mutation.user_id]
        return [row_json(mutation), mutation.timestamp_micros]

    def counter(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> str:
        return "rows_deleted" if isinstance(mutation, EnrollmentDelete) else "rows_written"

    def partition(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> str:
        return mutation.program_id

    def routing_key(self, mutation: EnrollmentUpsert | EnrollmentDelete) -> bytes:
        return mutation.program_id.encode()  # program_id, the partition key, is text


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
