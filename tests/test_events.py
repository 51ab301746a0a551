import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from programusers.events import (
    DeadLetter,
    EnrollmentDelete,
    EnrollmentUpsert,
    RecordOrigin,
    TimestampError,
    dead_letter_value,
    event_to_mutation,
    parse_event,
    parse_timestamp,
)

SAMPLE_BYTES = (Path(__file__).parent / "data" / "sample_event.json").read_bytes()
ARRIVAL = 1_700_000_000_000_000
UPDATED_MICROS = int(datetime(2023, 1, 12, 6, 30, 56, tzinfo=UTC).timestamp()) * 1_000_000 + 829_000
CREATED_MICROS = int(datetime(2023, 1, 12, 6, 30, 9, tzinfo=UTC).timestamp()) * 1_000_000 + 476_000
PII = "pii.person@example.com"
REASONS = {"invalid_json", "not_an_object", "missing_field", "wrong_type", "bad_timestamp"}
COLUMNS = {"program_externalId", "program_name", "pii_consent_required", "user_locations", "organisation_id",
           "organisation_name", "user_sub_type", "user_type", "created_at", "updated_at"}


def sample() -> dict:
    return json.loads(SAMPLE_BYTES)


def mutate(**changes) -> EnrollmentUpsert | EnrollmentDelete | DeadLetter:
    """Map the sample with top-level keys replaced (or removed when the value is `...`)."""
    event = sample()
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return event_to_mutation(event, ARRIVAL)


def with_profile(**changes) -> EnrollmentUpsert | EnrollmentDelete | DeadLetter:
    event = sample()
    for key, value in changes.items():
        if value is ...:
            del event["userProfile"][key]
        else:
            event["userProfile"][key] = value
    return event_to_mutation(event, ARRIVAL)


# --- SPEC §2 table, field by field, with the design note's sample ---

def test_sample_event_maps_to_the_full_row():
    result = parse_event(SAMPLE_BYTES, ARRIVAL)
    assert result == EnrollmentUpsert(
        program_id="5f362b78af0a4decfa9a106f",
        user_id="ba9aa220-ff1b-4717-b6ea-ace55f04fc16",
        columns={
            "program_externalId": "$programExternalId",
            "program_name": "$prorgramName",
            "pii_consent_required": True,
            "user_locations": {
                "district_name": "ANANTAPUR", "district_id": "2f76dcf5-e43b-4f71-a3f2-c8f19e1fce03",
                "district_code": "2822",
                "block_name": "AGALI", "block_id": "966c3be4-c125-467d-aaff-1eb1cd525923", "block_code": "282262",
                "state_name": "Andhra Pradesh", "state_id": "bc75cc99-9205-463e-a722-5326857838f8",
                "state_code": "28",
                "cluster_name": "ZPHS AGALI", "cluster_id": "beb0bcf4-d7cd-4a72-8f35-be8e5b03c0d1",
                "cluster_code": "2822620004",
                "school_name": "SMT PRAMEELAMMA AND SRI KGA GUPTA EM UP SCHOOL",
                "school_id": "01337588247832985613211", "school_code": "28226200816",
            },
            "organisation_id": "0126796199493140480",
            "organisation_name": "Staging Custodian Organization",
            "user_type": "administrator",
            "user_sub_type": "HM,CRP,CHM",
            "created_at": date(2023, 1, 12),
            "updated_at": date(2023, 1, 12),
        },
        timestamp_micros=UPDATED_MICROS,
    )


def test_sample_event_key_values():
    result = parse_event(SAMPLE_BYTES.decode(), ARRIVAL)
    locations = result.columns["user_locations"]
    assert locations["district_name"] == "ANANTAPUR"
    assert locations["state_code"] == "28"
    assert locations["school_code"] == "28226200816"
    assert result.columns["user_type"] == "administrator"
    assert result.columns["user_sub_type"] == "HM,CRP,CHM"
    assert result.columns["organisation_id"] == "0126796199493140480"
    assert result.columns["created_at"] == date(2023, 1, 12)
    assert result.timestamp_micros == 1_673_505_056_829_000 == UPDATED_MICROS


def test_location_type_is_lower_cased_values_stripped_numeric_code_kept_as_text():
    result = with_profile(userLocations=[
        {"type": " District ", "name": "  ANANTAPUR ", "id": "", "code": 2822},
        {"type": "   ", "name": "no type: skipped"},
        {"name": "no type key: skipped"},
        None,
    ])
    assert result.columns["user_locations"] == {"district_name": "ANANTAPUR", "district_code": "2822"}


def test_later_location_of_the_same_type_wins():
    result = with_profile(userLocations=[
        {"type": "district", "name": "OLD", "id": "d1"},
        {"type": "district", "name": "NEW"},
    ])
    assert result.columns["user_locations"] == {"district_name": "NEW", "district_id": "d1"}


def test_user_types_are_distinct_in_event_order():
    result = with_profile(profileUserTypes=[
        {"type": "Teacher", "subType": "crp"},
        {"type": "administrator", "subType": "hm"},
        {"type": "TEACHER", "subType": "CRP"},
        {"type": " ", "subType": None},
        {"subType": "deo"},
        None,
    ])
    assert result.columns["user_type"] == "teacher,administrator"
    assert result.columns["user_sub_type"] == "CRP,HM,DEO"


def test_dates_are_the_utc_calendar_date():
    result = mutate(createdAt="2023-01-12T02:00:00+05:30", updatedAt="2023-01-12T23:30:00-02:00")
    assert result.columns["created_at"] == date(2023, 1, 11)
    assert result.columns["updated_at"] == date(2023, 1, 13)


def test_ids_are_stripped_and_accept_mongo_oid():
    result = mutate(programId={"$oid": " 5f362b78af0a4decfa9a106f "}, userId="  u-1 ")
    assert (result.program_id, result.user_id) == ("5f362b78af0a4decfa9a106f", "u-1")


# --- pii_consent_required ---

@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("TRUE", True), (" false ", False), ("True", True),
    (None, False), ("", False), (..., False),
])
def test_pii_consent_required(value, expected):
    assert mutate(requestForPIIConsent=value).columns["pii_consent_required"] is expected


@pytest.mark.parametrize("value", [1, 0, "yes", [True], {"value": True}])
def test_pii_consent_of_another_type_is_dead_lettered(value):
    result = mutate(requestForPIIConsent=value)
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.field) == ("wrong_type", "requestForPIIConsent")
    assert result.detail.startswith("expected a boolean, got ")


# --- blank -> None and partial upserts ---

def test_blank_strings_are_null():
    event = sample()
    event.update(programName="   ", programExternalId=None)
    event["userProfile"]["rootOrg"] = {"id": "", "orgName": " \t"}
    columns = event_to_mutation(event, ARRIVAL).columns
    assert columns["program_name"] is None
    assert columns["program_externalId"] is None
    assert columns["organisation_id"] is None
    assert columns["organisation_name"] is None


@pytest.mark.parametrize("value", [None, [], [{"type": ""}], [{"type": "district", "name": " "}]])
def test_present_but_empty_locations_write_null(value):
    columns = with_profile(userLocations=value).columns
    assert "user_locations" in columns and columns["user_locations"] is None


@pytest.mark.parametrize("value", [None, [], [{"type": "", "subType": None}]])
def test_present_but_empty_user_types_write_null(value):
    columns = with_profile(profileUserTypes=value).columns
    assert columns["user_type"] is None and columns["user_sub_type"] is None


def test_rootorg_present_but_null_writes_null():
    columns = with_profile(rootOrg=None).columns
    assert columns["organisation_id"] is None and columns["organisation_name"] is None


@pytest.mark.parametrize(("section", "columns"), [
    ("userLocations", {"user_locations"}),
    ("profileUserTypes", {"user_type", "user_sub_type"}),
    ("rootOrg", {"organisation_id", "organisation_name"}),
])
def test_missing_section_leaves_its_columns_untouched(section, columns):
    written = with_profile(**{section: ...}).columns
    assert written.keys() == COLUMNS - columns


@pytest.mark.parametrize("profile", [..., None])
def test_missing_user_profile_leaves_all_its_columns_untouched(profile):
    written = mutate(userProfile=profile).columns
    assert written.keys() == {"program_externalId", "program_name", "pii_consent_required", "created_at",
                              "updated_at"}


def test_missing_top_level_keys_are_untouched_but_consent_is_always_written():
    written = mutate(programName=..., programExternalId=..., requestForPIIConsent=..., createdAt=...,
                     updatedAt=...).columns
    assert "program_name" not in written and "program_externalId" not in written
    assert "created_at" not in written and "updated_at" not in written
    assert written["pii_consent_required"] is False


# --- timestamps ---

MOMENT = datetime(2023, 1, 12, 6, 30, 56, 829000, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("2023-01-12T06:30:56.829Z", MOMENT),
    ("2023-01-12T06:30:56Z", MOMENT.replace(microsecond=0)),
    ("2023-01-12T06:30:56.829", MOMENT),
    ("2023-01-12 06:30:56.829", MOMENT),
    ("2023-01-12T12:00:56.829+05:30", MOMENT),
    ("2023-01-12T12:00:56.829+0530", MOMENT),
    ("2023-01-12T01:30:56.829-05:00", MOMENT),
    ("2023-01-12T06:30:56.829123Z", MOMENT.replace(microsecond=829123)),
    ("2023-01-12", datetime(2023, 1, 12, tzinfo=UTC)),
    (" 2023-01-12T06:30:56.829Z ", MOMENT),
    (1673505056829, MOMENT),
    (1673505056829.0, MOMENT),
    ("1673505056829", MOMENT),
    ({"$date": "2023-01-12T06:30:56.829Z"}, MOMENT),
    ({"$date": "2023-01-12T12:00:56.829+05:30"}, MOMENT),
    ({"$date": 1673505056829}, MOMENT),
    ({"$date": {"$numberLong": "1673505056829"}}, MOMENT),
    (0, datetime(1970, 1, 1, tzinfo=UTC)),
    (-86_400_000, datetime(1969, 12, 31, tzinfo=UTC)),
])
def test_parse_timestamp_forms(value, expected):
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [
    "bad@example.com", "2023-13-01", "2023-02-30T00:00:00Z", "12/01/2023", "2023-01-12T06:30:56.829+5",
    "2023-01-12x06:30", "2023-W02-4", "20230112T063056", "", "nan", "1e400",
    True, False, None, [], [1673505056829], {}, {"$date": None}, {"$date": {"$date": 1673505056829}},
    {"$date": "x", "extra": 1}, {"$numberLong": "1673505056829"}, {"$date": {"$numberLong": 1.5e400}},
    float("nan"), float("inf"), 10**30, "9" * 5000,
    "0001-01-01T00:00:00+05:00",  # out of datetime's range once moved to UTC
])
def test_parse_timestamp_rejects(value):
    with pytest.raises(TimestampError):
        parse_timestamp(value)


@pytest.mark.parametrize("value", [PII, "2023-02-30", "9" * 30, {"$date": PII}])
def test_timestamp_error_is_a_value_error_without_the_value(value):
    with pytest.raises(ValueError) as raised:
        parse_timestamp(value)
    assert "2023-02-30" not in str(raised.value) and "9" * 30 not in str(raised.value)
    assert PII not in str(raised.value)


@pytest.mark.parametrize("value", [{"$date": "2023-01-12T06:30:56.829Z"}, 1673505056829, "1673505056829"])
def test_event_timestamp_forms(value):
    result = mutate(updatedAt=value)
    assert result.timestamp_micros == UPDATED_MICROS
    assert result.columns["updated_at"] == date(2023, 1, 12)


@pytest.mark.parametrize("field", ["updatedAt", "createdAt"])
@pytest.mark.parametrize("value", ["bad@example.com", "2023-02-30", True, [], {"$date": "soon"}])
def test_unparseable_date_is_dead_lettered(field, value):
    result = mutate(**{field: value})
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.field) == ("bad_timestamp", field)


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, UPDATED_MICROS),
    ({"updatedAt": ...}, CREATED_MICROS),
    ({"updatedAt": None}, CREATED_MICROS),
    ({"updatedAt": "  "}, CREATED_MICROS),
    ({"updatedAt": ..., "createdAt": ...}, ARRIVAL),
    ({"updatedAt": None, "createdAt": ""}, ARRIVAL),
])
def test_write_timestamp_falls_back_from_updated_to_created_to_arrival(changes, expected):
    assert mutate(**changes).timestamp_micros == expected


def test_null_dates_are_written_as_null():
    columns = mutate(updatedAt=None, createdAt="").columns
    assert columns["updated_at"] is None and columns["created_at"] is None


# --- deletes ---

@pytest.mark.parametrize("deleted", [True, "true", " TRUE "])
def test_deleted_true_removes_the_row_stamped_like_an_upsert(deleted):
    assert mutate(deleted=deleted) == EnrollmentDelete(
        "5f362b78af0a4decfa9a106f", "ba9aa220-ff1b-4717-b6ea-ace55f04fc16", UPDATED_MICROS)


@pytest.mark.parametrize("deleted", [False, "false", None, ...])
def test_not_deleted_is_an_upsert(deleted):
    assert isinstance(mutate(deleted=deleted), EnrollmentUpsert)


def test_delete_ignores_other_fields_but_still_needs_ids_and_dates():
    assert mutate(deleted=True, userProfile="garbage") == EnrollmentDelete(
        "5f362b78af0a4decfa9a106f", "ba9aa220-ff1b-4717-b6ea-ace55f04fc16", UPDATED_MICROS)
    assert mutate(deleted=True, userId=None).field == "userId"
    assert mutate(deleted=True, updatedAt="never").reason == "bad_timestamp"
    assert mutate(deleted=1).field == "deleted"


# --- dead letters ---

@pytest.mark.parametrize("field", ["programId", "userId"])
@pytest.mark.parametrize(("value", "reason"), [
    (..., "missing_field"), (None, "missing_field"), ("", "missing_field"), ("   ", "missing_field"),
    ({"$oid": " "}, "missing_field"),
    (42, "wrong_type"), (True, "wrong_type"), ([PII], "wrong_type"), ({"id": "x"}, "wrong_type"),
    ({"$oid": 42}, "wrong_type"),
])
def test_bad_ids_are_dead_lettered_naming_the_field(field, value, reason):
    result = mutate(**{field: value})
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.field) == (reason, field)


@pytest.mark.parametrize(("profile_changes", "field"), [
    ({"userLocations": {"type": "district"}}, "userProfile.userLocations"),
    ({"userLocations": [{"type": "state", "name": "A"}, "district"]}, "userProfile.userLocations[1]"),
    ({"userLocations": [{}, {}, {"type": 7}]}, "userProfile.userLocations[2].type"),
    ({"userLocations": [{"type": "district", "name": ["ANANTAPUR"]}]}, "userProfile.userLocations[0].name"),
    ({"userLocations": [{"type": "district", "code": 28.5}]}, "userProfile.userLocations[0].code"),
    ({"userLocations": [{"type": "district", "id": 1.5}]}, "userProfile.userLocations[0].id"),
    ({"profileUserTypes": "administrator"}, "userProfile.profileUserTypes"),
    ({"profileUserTypes": [{"type": "a", "subType": {"x": 1}}]}, "userProfile.profileUserTypes[0].subType"),
    ({"rootOrg": "0126796199493140480"}, "userProfile.rootOrg"),
    ({"rootOrg": {"id": 126796199493140480}}, "userProfile.rootOrg.id"),
])
def test_wrong_types_in_the_profile_are_dead_lettered(profile_changes, field):
    result = with_profile(**profile_changes)
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.field) == ("wrong_type", field)


@pytest.mark.parametrize(("changes", "field"), [
    ({"userProfile": ["x"]}, "userProfile"),
    ({"programName": 5}, "programName"),
    ({"programExternalId": {"a": 1}}, "programExternalId"),
    ({"programName": "\ud800"}, "programName"),
])
def test_wrong_top_level_types_are_dead_lettered(changes, field):
    result = mutate(**changes)
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.field) == ("wrong_type", field)


@pytest.mark.parametrize("raw", [
    b"", b"{", b'{"programId": }', b"\xff\xfe{}", b'{"a": NaN}', b"[" * 100_000, b"1" * 5000, "{'a': 1}",
    None, 42,
])
def test_unparseable_payloads_are_dead_lettered(raw):
    result = parse_event(raw, ARRIVAL)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid_json" and result.field is None and result.detail


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"text"', b"true"])
def test_json_that_is_not_an_object_is_dead_lettered(raw):
    result = parse_event(raw, ARRIVAL)
    assert isinstance(result, DeadLetter) and result.reason == "not_an_object"


def test_utf8_bom_is_tolerated():
    assert isinstance(parse_event(b"\xef\xbb\xbf" + SAMPLE_BYTES, ARRIVAL), EnrollmentUpsert)


@pytest.mark.parametrize("changes", [
    {"userId": [PII]},
    {"userId": {"email": PII}},
    {"programId": 123456789},
    {"updatedAt": PII},
    {"createdAt": {"$date": PII}},
    {"requestForPIIConsent": PII},
    {"programName": [PII]},
    {"userProfile": PII},
])
def test_dead_letter_detail_never_contains_the_value(changes):
    result = mutate(**changes)
    assert isinstance(result, DeadLetter)
    value = next(iter(changes.values()))
    assert PII not in result.detail and "123456789" not in result.detail
    assert repr(value) not in result.detail


def test_invalid_json_detail_does_not_echo_the_payload():
    result = parse_event(f'{{"userId": "{PII}", "phone": 98765x}}'.encode(), ARRIVAL)
    assert result.reason == "invalid_json"
    assert PII not in result.detail and "98765" not in result.detail


# --- dead-letter value ---

def test_dead_letter_value():
    payload = b'{"userId": [1]}\xff'
    dead = parse_event(payload, ARRIVAL)
    failed_at = datetime(2023, 1, 12, 12, 0, 56, 829000, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    letter = json.loads(dead_letter_value(dead, payload, RecordOrigin("dev.ml.programUsers.raw", 3, 1234, 1_673_505_056_000),
                                          failed_at))
    assert letter == {
        "reason": "invalid_json", "field": None, "detail": dead.detail,
        "payload": '{"userId": [1]}\ufffd', "topic": "dev.ml.programUsers.raw", "partition": 3,
        "offset": 1234, "timestamp": 1_673_505_056_000, "failed_at": "2023-01-12T06:30:56.829Z",
    }


def test_dead_letter_value_of_a_tombstone_and_a_naive_time():
    dead = parse_event(None, ARRIVAL)
    letter = json.loads(dead_letter_value(dead, None, RecordOrigin("t", 0, 7), datetime(2023, 1, 12, 6, 30)))
    assert letter["payload"] is None and letter["timestamp"] is None
    assert letter["failed_at"] == "2023-01-12T06:30:00.000Z"


@given(st.text(min_size=1, max_size=400), st.integers(300, 900))  # above the envelope alone
def test_a_dead_letter_too_large_carries_the_longest_prefix_of_its_payload_that_fits(text, max_bytes):
    payload = text.encode("utf-8", "surrogatepass")
    dead = DeadLetter("invalid_json", None, "not JSON")
    value = dead_letter_value(dead, payload, RecordOrigin("t", 0, 7), datetime(2023, 1, 12, 6, 30), max_bytes=max_bytes)
    letter = json.loads(value)
    whole = payload.decode("utf-8", errors="replace")
    if letter.get("payload_truncated"):
        kept = letter["payload"]
        assert len(value) <= max_bytes and letter["payload_bytes"] == len(payload) and whole.startswith(kept)
        longer = dict(letter, payload=whole[:len(kept) + 1])
        assert len(json.dumps(longer).encode()) > max_bytes  # not a character more would fit
    else:
        assert letter["payload"] == whole and len(value) <= max_bytes


def test_a_two_megabyte_event_gives_a_dead_letter_kafka_takes():
    payload = b'{"userId": "' + b"\x01" * 700_000 + b'"'
    value = dead_letter_value(parse_event(payload, ARRIVAL), payload, RecordOrigin("t", 0, 7), datetime(2023, 1, 12, 6, 30))
    letter = json.loads(value)
    assert len(value) <= 900_000 < len(payload) * 2 and letter["payload_truncated"]
    assert letter["payload_bytes"] == len(payload) and letter["offset"] == 7


# --- properties ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
millis = st.integers(-(10**13), 10**13)  # about ±300 years around 1970
timestamp_like = st.one_of(
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])).map(datetime.isoformat),
    millis,
    millis.map(str),
    st.dates().map(str),
    millis.map(lambda n: {"$date": {"$numberLong": str(n)}}),
    millis.map(lambda n: {"$date": n}),
)
PATHS = [
    ("programId",), ("userId",), ("programName",), ("programExternalId",), ("requestForPIIConsent",),
    ("deleted",), ("createdAt",), ("updatedAt",), ("userProfile",),
    ("userProfile", "userLocations"), ("userProfile", "userLocations", 0), ("userProfile", "userLocations", 2),
    ("userProfile", "userLocations", 1, "type"), ("userProfile", "userLocations", 3, "code"),
    ("userProfile", "userLocations", 4, "name"), ("userProfile", "profileUserTypes"),
    ("userProfile", "profileUserTypes", 1), ("userProfile", "profileUserTypes", 0, "type"),
    ("userProfile", "profileUserTypes", 2, "subType"), ("userProfile", "rootOrg"),
    ("userProfile", "rootOrg", "id"), ("userProfile", "rootOrg", "orgName"),
]


def substituted(path: tuple, value) -> dict:
    event = sample()
    target = event
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return event


def assert_well_formed(result):
    if isinstance(result, DeadLetter):
        assert result.reason in REASONS and result.detail
        return
    assert isinstance(result, (EnrollmentUpsert, EnrollmentDelete))
    assert isinstance(result.program_id, str) and result.program_id.strip() == result.program_id != ""
    assert isinstance(result.user_id, str) and result.user_id.strip() == result.user_id != ""
    assert type(result.timestamp_micros) is int
    if isinstance(result, EnrollmentUpsert):
        assert result.columns.keys() <= COLUMNS
        assert isinstance(result.columns["pii_consent_required"], bool)
        locations = result.columns.get("user_locations")
        assert locations is None or (locations and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in locations.items()))
        for column in ("created_at", "updated_at"):
            assert result.columns.get(column) is None or type(result.columns[column]) is date


@given(json_values)
def test_arbitrary_json_never_raises(value):
    assert_well_formed(parse_event(json.dumps(value).encode(), ARRIVAL))
    assert_well_formed(event_to_mutation(value, ARRIVAL))


@given(st.binary())
def test_arbitrary_bytes_never_raise(raw):
    assert_well_formed(parse_event(raw, ARRIVAL))


@given(st.sampled_from(PATHS), json_values | timestamp_like)
def test_sample_with_any_field_substituted_never_raises(path, value):
    event = substituted(path, value)
    assert_well_formed(parse_event(json.dumps(event), ARRIVAL))


@given(st.sampled_from(PATHS), json_values)
def test_dead_letter_never_echoes_a_substituted_value(path, value):
    marked = [value, PII] if value is not None else {"email": PII}
    result = event_to_mutation(substituted(path, marked), ARRIVAL)
    if isinstance(result, DeadLetter):
        assert PII not in result.detail


@given(timestamp_like)
def test_updated_at_drives_the_write_timestamp(value):
    result = mutate(updatedAt=value)
    moment = parse_timestamp(value)
    assert result.timestamp_micros == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert result.columns["updated_at"] == moment.date()


def test_numeric_location_ids_and_codes_are_kept_as_text():
    result = with_profile(userLocations=[{"type": "block", "id": 966, "code": 282262}])
    assert result.columns["user_locations"] == {"block_id": "966", "block_code": "282262"}
