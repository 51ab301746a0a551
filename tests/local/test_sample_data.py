"""The sample generator: deterministic, realistic, and readable by the ingest mapper and the cipher."""
from collections import Counter

import pytest

from programusers.crypto import PlatformCipher
from programusers.events import EnrollmentUpsert, parse_event
from programusers.local.sample_data import generate

CIPHER = PlatformCipher("sample-salt")


@pytest.fixture(scope="module")
def sample():
    return generate(300, seed=11, cipher=CIPHER)


def test_same_seed_same_sample_other_seed_other_sample(sample):
    again = generate(300, seed=11, cipher=CIPHER)
    assert again.events == sample.events and again.consents == sample.consents and again.profiles == sample.profiles
    assert generate(300, seed=12, cipher=CIPHER).events != sample.events


def test_two_programs_one_asking_for_pii(sample):
    assert sorted(p["pii"] for p in sample.programs) == [False, True]
    joined = Counter(e["programId"] for e in sample.events)
    assert set(joined) == {p["id"] for p in sample.programs} and min(joined.values()) > 50


def test_every_event_maps_to_an_enrollment_row(sample):
    import json

    mutations = [parse_event(json.dumps(e), 0) for e in sample.events]
    assert all(isinstance(m, EnrollmentUpsert) for m in mutations)
    with_locations = [m for m in mutations if m.columns.get("user_locations")]
    assert len(with_locations) < len(mutations)  # some users have no location
    assert {"state_name", "district_name", "block_name", "cluster_name", "school_code", "school_name"} <= set(
        with_locations[0].columns["user_locations"])


def test_consent_mix_and_encrypted_cache(sample):
    pii_program = next(p["id"] for p in sample.programs if p["pii"])
    statuses = Counter((c["object_id"] == pii_program, c["status"].lower()) for c in sample.consents)
    assert statuses[(True, "active")] and statuses[(True, "revoked")] and statuses[(False, "active")]
    users = {e["userId"] for e in sample.events}
    assert 0 < len(users - set(sample.profiles)) < len(users) // 10  # a few users missing from the cache
    profile = next(iter(sample.profiles.values()))
    assert "@" not in profile["email"] and CIPHER.decrypt(profile["email"]).endswith("@example.org")
    with_phone = [p for p in sample.profiles.values() if "phone" in p]
    assert 0 < len(with_phone) < len(sample.profiles) and CIPHER.decrypt(with_phone[0]["phone"]).isdigit()
