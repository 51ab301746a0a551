"""The ingest's writes to program_enrollment: their CQL, and the write policy WriteEnrollments accepts (its
writes against the real Cassandra are tested with the sink, tests/io/test_cassandra_sink.py)."""
import json
from datetime import date

import pytest
from conftest import LOCAL_CASSANDRA

from programusers.events import EnrollmentDelete, EnrollmentUpsert
from programusers.io.cassandra_sink import WritePolicy
from programusers.transforms.enrollments import (
    EnrollmentStatements,
    WriteEnrollments,
    delete_cql,
    row_json,
    upsert_cql,
)


def test_upsert_cql_binds_a_row_as_json_leaving_absent_columns_unset():
    assert upsert_cql("ks") == (
        "INSERT INTO ks.program_enrollment JSON ? DEFAULT UNSET USING TIMESTAMP ?")


def test_delete_cql_is_stamped():
    assert delete_cql("ks") == (
        "DELETE FROM ks.program_enrollment USING TIMESTAMP ? WHERE program_id = ? AND user_id = ?")


@pytest.mark.parametrize("keyspace", ["ks; DROP", "1a", "ks.program_enrollment"])
def test_cql_names_are_checked(keyspace):
    with pytest.raises(ValueError):
        upsert_cql(keyspace)
    with pytest.raises(ValueError):
        delete_cql(keyspace)


def test_row_json_carries_the_key_and_only_the_columns_the_event_gave():
    upsert = EnrollmentUpsert("p1", "u1", {"program_name": "Ω \"quoted\"", "organisation_id": None,
                                           "created_at": date(2024, 2, 29), "user_locations": {"state_name": "KA"},
                                           "pii_consent_required": True}, 7)
    assert json.loads(row_json(upsert)) == {
        "program_id": "p1", "user_id": "u1", "program_name": "Ω \"quoted\"", "organisation_id": None,
        "created_at": "2024-02-29", "user_locations": {"state_name": "KA"}, "pii_consent_required": True}


def test_every_upsert_shares_one_statement_and_deletes_another():
    statements = EnrollmentStatements("ks")
    upserts = [EnrollmentUpsert("p", "u", {"program_name": "x"}, 1), EnrollmentUpsert("p", "u", {}, 2)]
    delete = EnrollmentDelete("p", "u", 3)
    assert {statements.key(u) for u in upserts} == {statements.key(upserts[0])} != {statements.key(delete)}
    assert statements.values(upserts[0])[1] == 1
    assert statements.values(delete) == [3, "p", "u"]


def test_write_enrollments_rejects_a_nonsense_policy():
    with pytest.raises(ValueError):
        WriteEnrollments(LOCAL_CASSANDRA, "ks", WritePolicy(concurrency=0))
    with pytest.raises(KeyError):
        WriteEnrollments(LOCAL_CASSANDRA, "ks", WritePolicy(consistency="MOSTLY"))
