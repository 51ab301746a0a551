"""The ingest's writes to program_enrollment: their CQL, and the write policy WriteEnrollments accepts (its
writes against the real Cassandra are tested with the sink, tests/io/test_cassandra_sink.py)."""
import pytest
from conftest import LOCAL_CASSANDRA

from programusers.io.cassandra_sink import WritePolicy
from programusers.transforms.enrollments import WriteEnrollments, delete_cql, upsert_cql


def test_upsert_cql_binds_key_then_columns_then_timestamp():
    assert upsert_cql("ks", ["program_name", "user_locations"]) == (
        "INSERT INTO ks.program_enrollment (program_id, user_id, program_name, user_locations) "
        "VALUES (?, ?, ?, ?) USING TIMESTAMP ?")


def test_delete_cql_is_stamped():
    assert delete_cql("ks") == (
        "DELETE FROM ks.program_enrollment USING TIMESTAMP ? WHERE program_id = ? AND user_id = ?")


@pytest.mark.parametrize("keyspace,columns", [("ks; DROP", ["a"]), ("ks", ["a) VALUES (1"]), ("ks", ["1a"])])
def test_cql_names_are_checked(keyspace, columns):
    with pytest.raises(ValueError):
        upsert_cql(keyspace, columns)


def test_write_enrollments_rejects_a_nonsense_policy():
    with pytest.raises(ValueError):
        WriteEnrollments(LOCAL_CASSANDRA, "ks", WritePolicy(concurrency=0))
    with pytest.raises(KeyError):
        WriteEnrollments(LOCAL_CASSANDRA, "ks", WritePolicy(consistency="MOSTLY"))
