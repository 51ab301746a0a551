import json
import pickle
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from programusers.filters import Predicate, ReportRequest, RequestError, parse_request

PROGRAM = "602512d8e6aefa27d9629bc3"
PROGRAM_FILTER = {"name": "program_id", "operator": "=", "value": PROGRAM}


def request(*enrollment, consent=()):
    groups = [{"table_name": "program_enrollment", "table_filters": [PROGRAM_FILTER, *enrollment]}]
    if consent:
        groups.append({"table_name": "user_consent", "table_filters": list(consent)})
    return {"filters": groups}


def f(name, op, value):
    return {"name": name, "operator": op, "value": value}


def row(**columns):
    return {"program_id": PROGRAM, "user_id": "u1", **columns}


# --- parsing -------------------------------------------------------------------------------

def test_design_note_example():
    parsed = parse_request(request(
        f("user_locations['district_id']", "=", "ed9e"),
        f("organisation_id", "=", "0126796199493140480"),
        f("updated_at", ">=", "2023-01-01"),
        f("updated_at", "<=", "2023-12-31"),
        consent=[f("object_id", "=", PROGRAM)],
    ))
    assert parsed == ReportRequest(PROGRAM, (
        Predicate("program_id", "=", PROGRAM),
        Predicate("user_locations", "=", "ed9e", key="district_id"),
        Predicate("organisation_id", "=", "0126796199493140480"),
        Predicate("updated_at", ">=", date(2023, 1, 1)),
        Predicate("updated_at", "<=", date(2023, 12, 31)),
    ), None)
    assert pickle.loads(pickle.dumps(parsed)) == parsed


TEXT_NAMES = ["program_id", "program_externalId", "organisation_id", "user_type", "user_sub_type",
              "user_locations['state_id']", "user_locations['school_code_2']"]


@pytest.mark.parametrize("name", TEXT_NAMES)
@pytest.mark.parametrize("op, value, parsed", [("=", "x", "x"), ("!=", "x", "x"), ("in", ["x", "y", "x"], frozenset("xy"))])
def test_every_text_filter_and_operator(name, op, value, parsed):
    tested = f(name, op, value)
    others = [] if name == "program_id" and op == "=" else [PROGRAM_FILTER]
    group = {"table_name": "program_enrollment", "table_filters": [tested, *others]}
    predicate = parse_request({"filters": [group]}).predicates[0]
    column, key = ("user_locations", name[16:-2]) if name.startswith("user_locations") else (name, None)
    assert predicate == Predicate(column, op, parsed, key)


@pytest.mark.parametrize("name", ["created_at", "updated_at"])
@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_every_date_filter_and_operator(name, op):
    predicate = parse_request(request(f(name, op, "2024-02-29"))).predicates[1]
    assert predicate == Predicate(name, op, date(2024, 2, 29))


def test_consent_filters():
    parsed = parse_request(request(consent=[
        f("object_id", "=", PROGRAM), f("user_id", "in", ["u1", "u2", "u3"]), f("user_id", "in", ["u2", "u3", "u4"]),
    ]))
    assert parsed.user_ids == frozenset({"u2", "u3"})
    assert parse_request(request(consent=[f("user_id", "=", "u9")])).user_ids == frozenset({"u9"})


def test_request_shapes():
    expected = parse_request(request())
    assert parse_request({"params": request()}) == expected
    assert parse_request(json.dumps(request())) == expected
    assert parse_request(json.dumps({"params": request(), "tag": "x"})) == expected


EMAIL = "someone@example.com"


@pytest.mark.parametrize("request_data, message", [
    (None, "request_data is missing"),
    ("", "request_data is missing"),
    ("{not json", "request_data is not valid JSON"),
    ("[1]", "request_data must be a JSON object"),
    ({}, "request_data has no filters list"),
    ({"params": {"other": 1}}, "request_data has no filters list"),
    ({"filters": {"program_id": PROGRAM}}, "request_data has no filters list"),
    ({"filters": ["x"]}, "filters[0] must be an object with table_name and a table_filters list"),
    ({"filters": [{"table_name": "user", "table_filters": []}]}, "filters[0].table_name 'user' is not allowed"),
    ({"filters": [{"table_name": "program_enrollment", "table_filters": [PROGRAM_FILTER, {"operator": "="}]}]},
     "filters[0].table_filters[1] must be an object with name"),
    (request(f("email", "=", EMAIL)), "filter program_enrollment.'email' is not allowed"),
    (request(f("user_locations[district_id]", "=", "x")), "filter program_enrollment.'user_locations[district_id]' is not allowed"),
    (request(f("user_locations['District']", "=", "x")), "is not allowed"),
    (request(consent=[f("status", "=", "active")]), "filter user_consent.'status' is not allowed"),
    (request(f("organisation_id", "like", "x")), "filter program_enrollment.organisation_id: operator 'like' is not allowed (use =, !=, in)"),
    (request(f("organisation_id", ">", "x")), "operator '>' is not allowed"),
    (request(f("organisation_id", None, "x")), "operator None is not allowed"),
    (request(f("updated_at", "in", ["2023-01-01"])), "filter program_enrollment.updated_at: operator 'in' is not allowed (use =, !=, <, <=, >, >=)"),
    (request(consent=[f("object_id", "!=", PROGRAM)]), "filter user_consent.object_id: operator '!=' is not allowed (use =)"),
    (request(consent=[f("user_id", "!=", "u1")]), "filter user_consent.user_id: operator '!=' is not allowed (use =, in)"),
    (request(f("updated_at", ">=", "2023-13-01")), "filter program_enrollment.updated_at: value must be a real date as YYYY-MM-DD"),
    (request(f("created_at", "=", "2023-02-30")), "value must be a real date"),
    (request(f("created_at", "=", "20230201")), "value must be a real date"),
    (request(f("created_at", "=", "2023-02-01T00:00:00")), "value must be a real date"),
    (request(f("created_at", "=", 20230201)), "value must be a real date"),
    (request(f("organisation_id", "=", 126796199493140480)), "filter program_enrollment.organisation_id: value must be a non-empty string"),
    (request(f("organisation_id", "=", ["a"])), "value must be a non-empty string"),
    (request(f("organisation_id", "=", " ")), "value must be a non-empty string"),
    (request(f("user_type", "in", "teacher")), "filter program_enrollment.user_type: value for 'in' must be a non-empty list"),
    (request(f("user_type", "in", [])), "value for 'in' must be a non-empty list"),
    (request(f("user_type", "in", ["teacher", 3])), "value for 'in' must be a non-empty list"),
    (request(consent=[f("user_id", "in", EMAIL)]), "filter user_consent.user_id: value for 'in' must be"),
    ({"filters": [{"table_name": "program_enrollment", "table_filters": [f("organisation_id", "=", "o")]}]},
     "exactly one program_enrollment.program_id '=' filter is required, found 0"),
    ({"filters": [{"table_name": "program_enrollment", "table_filters": [f("program_id", "in", [PROGRAM])]}]},
     "found 0"),
    (request(PROGRAM_FILTER), "exactly one program_enrollment.program_id '=' filter is required, found 2"),
    (request(consent=[f("object_id", "=", "another-program")]), "filter user_consent.object_id must equal the program_id filter"),
])
def test_rejections(request_data, message):
    with pytest.raises(RequestError) as info:
        parse_request(request_data)
    text = str(info.value)
    assert message in text
    assert len(text) <= 300
    assert EMAIL not in text


def test_long_names_are_truncated():
    with pytest.raises(RequestError) as info:
        parse_request(request(f("x" * 1000, "=", "v")))
    assert len(str(info.value)) < 120


# --- matching semantics --------------------------------------------------------------------

def matches(*filters, consent=(), **columns):
    return parse_request(request(*filters, consent=consent)).matches(row(**columns))


def test_program_id_is_checked():
    assert matches()
    assert not parse_request(request()).matches({"program_id": "other", "user_id": "u1"})


def test_not_equal_matches_null():
    assert matches(f("organisation_id", "!=", "o1"), organisation_id=None)
    assert matches(f("organisation_id", "!=", "o1"))  # column absent from the row
    assert matches(f("user_locations['district_id']", "!=", "d1"), user_locations=None)
    assert matches(f("user_locations['district_id']", "!=", "d1"), user_locations={"state_id": "s"})
    assert not matches(f("organisation_id", "!=", "o1"), organisation_id="o1")
    assert not matches(f("organisation_id", "=", "o1"), organisation_id=None)
    assert not matches(f("organisation_id", "in", ["o1"]), organisation_id=None)


def test_text_matching_is_exact_except_multi_valued():
    assert not matches(f("organisation_id", "=", "O1"), organisation_id="o1")
    assert matches(f("user_type", "=", "Teacher"), user_type="administrator,teacher")
    assert matches(f("user_sub_type", "in", ["deo", "x"]), user_sub_type="HM,DEO")
    assert not matches(f("user_type", "=", "teach"), user_type="administrator,teacher")
    assert not matches(f("user_type", "!=", "TEACHER"), user_type="administrator,teacher")
    assert matches(f("user_type", "!=", "parent"), user_type="administrator,teacher")


def test_locations():
    locations = {"district_id": "d1", "state_id": "s1"}
    assert matches(f("user_locations['district_id']", "=", "d1"), user_locations=locations)
    assert matches(f("user_locations['state_id']", "in", ["s0", "s1"]), user_locations=locations)
    assert not matches(f("user_locations['district_id']", "=", "d1"), user_locations=None)
    assert not matches(f("user_locations['block_id']", "=", "d1"), user_locations=locations)


def test_dates():
    assert matches(created_at=None, updated_at=None)  # no date filter: nulls kept
    assert matches(created_at=date(1901, 1, 1), updated_at=date(2101, 1, 1))
    assert not matches(created_at=date(1900, 12, 31))
    assert not matches(updated_at=date(2101, 1, 2))
    since = f("updated_at", ">=", "2023-01-01")
    assert matches(since, updated_at=date(2023, 1, 1), created_at=None)
    assert matches(since, updated_at=datetime(2023, 1, 1, 23, 59))
    assert not matches(since, updated_at=date(2022, 12, 31))
    assert not matches(since, updated_at=None)
    assert not matches(f("updated_at", "!=", "2023-01-01"), updated_at=None)
    # A filter on one column leaves the default range on the other.
    assert not matches(since, updated_at=date(2023, 5, 1), created_at=date(1800, 1, 1))
    assert matches(f("created_at", "<", "1850-01-01"), created_at=date(1800, 1, 1))


def test_user_ids():
    assert matches(consent=[f("user_id", "in", ["u1", "u2"])])
    assert not matches(consent=[f("user_id", "=", "u2")])


# --- property: the parsed predicates agree with a naive evaluation of the raw filters ---------

DATES = [None, date(1800, 1, 1), date(1901, 1, 1), date(2020, 6, 15), date(2023, 1, 1), date(2101, 1, 1), date(2150, 1, 1)]
TYPES = [None, "teacher", "administrator,teacher", "parent", "HM,DEO", "DEO"]
SMALL = st.sampled_from(["a", "b", "c"])

rows = st.fixed_dictionaries({
    "program_id": st.sampled_from([PROGRAM, "other"]),
    "user_id": st.sampled_from(["u1", "u2", "u3"]),
    "program_externalId": st.none() | SMALL,
    "organisation_id": st.none() | SMALL,
    "user_type": st.sampled_from(TYPES),
    "user_sub_type": st.sampled_from(TYPES),
    "user_locations": st.none() | st.dictionaries(st.sampled_from(["state_id", "district_id"]), SMALL),
    "created_at": st.sampled_from(DATES),
    "updated_at": st.sampled_from(DATES),
})
text_filters = st.builds(
    f,
    st.sampled_from(["program_externalId", "organisation_id", "user_locations['state_id']",
                     "user_locations['district_id']"]),
    st.sampled_from(["=", "!="]), SMALL,
) | st.builds(f, st.sampled_from(["organisation_id", "user_locations['state_id']"]), st.just("in"),
              st.lists(SMALL, min_size=1, max_size=3))
PROGRAMS = st.sampled_from(["other", PROGRAM])
program_filters = st.builds(f, st.just("program_id"), st.just("!="), PROGRAMS) | st.builds(
    f, st.just("program_id"), st.just("in"), st.lists(PROGRAMS, min_size=1))
type_filters = st.builds(f, st.sampled_from(["user_type", "user_sub_type"]), st.sampled_from(["=", "!="]),
                         st.sampled_from(["Teacher", "parent", "deo", "hm"])) | st.builds(
    f, st.sampled_from(["user_type", "user_sub_type"]), st.just("in"),
    st.lists(st.sampled_from(["TEACHER", "deo", "x"]), min_size=1, max_size=2))
date_filters = st.builds(f, st.sampled_from(["created_at", "updated_at"]), st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
                         st.sampled_from(["1850-01-01", "2020-06-15", "2023-01-01", "2200-01-01"]))
user_filters = st.builds(f, st.just("user_id"), st.just("="), st.sampled_from(["u1", "u2"])) | st.builds(
    f, st.just("user_id"), st.just("in"), st.lists(st.sampled_from(["u1", "u2", "u3"]), min_size=1))


def oracle(enrollment_filters, consent_filters, r):
    """Evaluate the raw filters directly: ISO strings for dates, lists for multi-values."""
    def value_of(name):
        if name.startswith("user_locations['"):
            return (r["user_locations"] or {}).get(name[len("user_locations['"):-2])
        return r[name]

    for flt in [PROGRAM_FILTER, *enrollment_filters]:
        name, op, wanted = flt["name"], flt["operator"], flt["value"]
        actual = value_of(name)
        if name in ("created_at", "updated_at"):
            if actual is None:
                return False
            iso = actual.isoformat()
            ok = {"=": iso == wanted, "!=": iso != wanted, "<": iso < wanted, "<=": iso <= wanted,
                  ">": iso > wanted, ">=": iso >= wanted}[op]
        else:
            wanted_list = wanted if op == "in" else [wanted]
            if actual is None:
                ok = op == "!="
            elif name in ("user_type", "user_sub_type"):
                hit = any(a.lower() == w.lower() for a in actual.split(",") for w in wanted_list)
                ok = hit != (op == "!=")
            else:
                ok = (actual in wanted_list) != (op == "!=")
        if not ok:
            return False
    for column in ("created_at", "updated_at"):
        if (not any(flt["name"] == column for flt in enrollment_filters) and r[column] is not None
                and not "1901-01-01" <= r[column].isoformat() <= "2101-01-01"):
            return False
    return all(r["user_id"] in (flt["value"] if flt["operator"] == "in" else [flt["value"]])
               for flt in consent_filters)


@settings(max_examples=300)
@given(
    enrollment_filters=st.lists(text_filters | type_filters | date_filters | program_filters, max_size=4),
    consent_filters=st.lists(user_filters, max_size=2),
    table=st.lists(rows, max_size=12),
)
def test_filtering_agrees_with_oracle(enrollment_filters, consent_filters, table):
    parsed = parse_request(request(*enrollment_filters, consent=consent_filters))
    kept = [r for r in table if parsed.matches(r)]
    assert kept == [r for r in table if oracle(enrollment_filters, consent_filters, r)]
