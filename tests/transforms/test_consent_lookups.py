"""A program's consent, looked up by user: the latest decision for the program, nobody else's."""
from datetime import datetime

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import LOCAL_CASSANDRA

from programusers import runners
from programusers.io.lookups import LookUp
from programusers.local.sample_data import load_consents
from programusers.transforms import program_reads


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
    with test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner")) as pipeline:
        user_ids = pipeline | beam.Create(requested)
        looked_up = user_ids | LookUp(program_reads.ConsentHandler(LOCAL_CASSANDRA, keyspace, program,
                                                                   users_per_query=users_per_query), batch_size=50)
        assert_that(looked_up, equal_to(expected))
