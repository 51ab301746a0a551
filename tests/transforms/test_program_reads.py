"""Reading one program from Cassandra: its partition in slices of user ids, whether it asks for consent,
and its users' consent looked up by user (the latest decision for the program, nobody else's)."""
from datetime import datetime

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from cassandra.concurrent import execute_concurrent_with_args
from conftest import LOCAL_CASSANDRA
from hypothesis import given
from hypothesis import strategies as st

from programusers import runners
from programusers.local.sample_data import load_consents
from programusers.transforms import program_reads


@given(st.text(min_size=1), st.integers(1, program_reads.MAX_SLICES))
def test_every_user_id_falls_in_exactly_one_slice(user_id, count):
    # Python orders str by code point, as Cassandra orders text by its UTF-8 bytes.
    slices = program_reads.user_id_slices(count)
    assert len(slices) == count
    assert sum(low <= user_id and (high is None or user_id < high) for low, high in slices) == 1


# Around and between the bounds, and of other shapes than the platform's hex UUIDs.
ODD_IDS = ["0", "00", "0f", "10", "1", "7f", "80", "ef", "f0", "ff", "fff", "fg", "g", "Z-user", "user-42",
           "ü-user", "\U0001F600", "\U0010FFFFx", "F0", "a1b2c3d4-0000-4000-8000-000000000000"]


def _insert(session, keyspace, program, user_ids, pii):
    statement = session.prepare(f"INSERT INTO {keyspace}.program_enrollment (program_id, user_id, "
                                "pii_consent_required, user_type) VALUES (?, ?, ?, 'teacher')")
    execute_concurrent_with_args(session, statement, [(program, user_id, asks) for user_id, asks in zip(user_ids, pii)],
                                 concurrency=32, raise_on_first_error=True)


@pytest.mark.services
@pytest.mark.parametrize("slices", [1, 3, 16, 64])
def test_the_partition_is_read_whole_and_once_in_slices(cassandra_session, test_schema, unique, slices):
    keyspace, program = test_schema["programs_keyspace"], f"prog-{unique}"
    _insert(cassandra_session, keyspace, program, ODD_IDS, [False] * len(ODD_IDS))
    _insert(cassandra_session, keyspace, f"other-{unique}", ODD_IDS[:3], [True] * 3)  # another program's rows
    with test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner")) as pipeline:
        pages = pipeline | program_reads.ReadProgramEnrollments(LOCAL_CASSANDRA, keyspace, program, fetch_size=4,
                                                                slices=slices)
        assert_that(pages | beam.FlatMap(lambda page: [(row["program_id"], row["user_id"]) for row in page]),
                    equal_to([(program, user_id) for user_id in ODD_IDS]))
        assert_that(pages | beam.Map(lambda page: 1 <= len(page) <= 4), equal_to([True] * len(pages_of(slices))),
                    label="PagesOfAtMostFetchSize")


def pages_of(slices):
    """How many pages of 4 the odd ids make, read in these slices."""
    return [page for low, high in program_reads.user_id_slices(slices)
            for page in range(0, sum(low <= u and (high is None or u < high) for u in ODD_IDS), 4)]


@pytest.mark.services
def test_locations_read_as_they_were_written(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"prog-{unique}"
    locations = {"state_name": "Karnātaka \"North\"", "district_name": "Mysuru, \\ 'old'", "school_code": "0029"}
    insert = cassandra_session.prepare(f"INSERT INTO {keyspace}.program_enrollment (program_id, user_id, "
                                       "user_locations) VALUES (?, ?, ?)")
    cassandra_session.execute(insert, (program, "u-with", locations))
    cassandra_session.execute(insert, (program, "u-empty", {}))  # Cassandra stores an empty map as null
    cassandra_session.execute(insert, (program, "u-without", None))
    with test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner")) as pipeline:
        pages = pipeline | program_reads.ReadProgramEnrollments(LOCAL_CASSANDRA, keyspace, program)
        assert_that(pages | beam.FlatMap(lambda page: [(row["user_id"], row["user_locations"]) for row in page]),
                    equal_to([("u-with", locations), ("u-empty", None), ("u-without", None)]))


@pytest.mark.services
@pytest.mark.parametrize("flags,asks", [((False, None, True, False), True), ((False, None), False), ((), False)])
def test_the_program_asks_when_any_of_its_rows_asks(cassandra_session, test_schema, unique, flags, asks):
    keyspace, program = test_schema["programs_keyspace"], f"prog-{unique}"
    _insert(cassandra_session, keyspace, program, [f"u{n}" for n in range(len(flags))], flags)
    _insert(cassandra_session, keyspace, f"other-{unique}", ["u0"], [True])
    assert program_reads.program_asks_for_consent(cassandra_session, keyspace, program) is asks


@pytest.mark.services
def test_a_program_is_sized_from_a_slice_of_its_user_ids(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"prog-{unique}"
    # Ids evenly spread over their first two hex digits, as UUIDs are: 3 of each.
    _insert(cassandra_session, keyspace, program, [f"{n % 256:02x}-{n}" for n in range(768)], [False] * 768)
    _insert(cassandra_session, keyspace, f"other-{unique}", ["00-other"] * 5, [False] * 5)
    assert program_reads.estimated_rows(cassandra_session, keyspace, program) == 768
    assert program_reads.estimated_rows(cassandra_session, keyspace, f"none-{unique}") == 0


def _consent(user_id, consumer, object_id, status, day):
    moment = datetime(2024, 1, day)
    return {"id": f"{user_id}:{consumer}:{object_id}", "user_id": user_id, "consumer_id": consumer,
            "consumer_type": "ORGANISATION", "object_id": object_id, "object_type": "Program", "status": status,
            "categories": [], "consent_data": None, "created_on": moment, "last_updated_on": moment, "expiry": None}


@pytest.mark.services
@pytest.mark.parametrize("users_per_query", [1, 3, 50])
def test_lookups_find_the_latest_consent_for_the_program(cassandra_session, test_schema, unique, users_per_query):
    keyspace, program, other = test_schema["consent_keyspace"], f"prog-{unique}", f"other-{unique}"
    consents = [_consent(f"u{i}-{unique}", "org-1", program, ("ACTIVE", "REVOKED")[i % 2], 1 + i % 9)
                for i in range(40)]
    consents += [
        _consent(f"u0-{unique}", "org-2", program, "REVOKED", 20),  # a later decision by another consumer
        _consent(f"u1-{unique}", "org-1", other, "ACTIVE", 25),  # another program's consent is not ours
        _consent(f"outsider-{unique}", "org-1", program, "ACTIVE", 3),  # not a requested user
    ]
    load_consents(cassandra_session, keyspace, consents)
    requested = [f"u{i}-{unique}" for i in range(50)]  # u40..u49 have no consent row
    expected = [(f"u{i}-{unique}", {"status": ("ACTIVE", "REVOKED")[i % 2] if i else "REVOKED",
                                    "last_updated_on": datetime(2024, 1, 20 if i == 0 else 1 + i % 9)})
                for i in range(40)]
    with program_reads.ConsentHandler(LOCAL_CASSANDRA, keyspace, program, users_per_query=users_per_query) as look_up:
        assert sorted(look_up(requested).items()) == sorted(expected)
