import csv
import dataclasses
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from programusers.crypto import PlatformCipher
from programusers.model_config import default_model_config
from programusers.report_rows import (
    EMAIL_UNDECRYPTABLE,
    PHONE_UNDECRYPTABLE,
    PROFILE_MISSING,
    build_report_row,
    csv_line,
    header,
    sort_key,
)

CONFIG = default_model_config()
CIPHER = PlatformCipher("testsalt")
NAME, PHONE, EMAIL = "User Name(On user consent)", "Mobile number(On user consent)", "Email ID(On user consent)"
FLAG, WHEN = "Consent Provided", "Consent Provided Date"
PII_LABELS = (NAME, PHONE, EMAIL, FLAG, WHEN)
# The design note's CSV columns, written out so the tests don't derive them from the code under test.
ALL_COLUMNS = ["User UUID", "User Name(On user consent)", "Mobile number(On user consent)",
               "Email ID(On user consent)", "Consent Provided", "Consent Provided Date", "Program Name",
               "Program ID", "State", "District", "Block", "Cluster", "School Id", "School Name", "Usertype",
               "Usersubtype", "Org Name"]
OPEN_COLUMNS = [ALL_COLUMNS[0]] + ALL_COLUMNS[6:]


def enrollment(pii=True, **columns):
    return {
        "program_id": "p1", "program_externalId": "PGM-1", "program_name": "Program A",
        "pii_consent_required": pii, "user_id": "u1", "organisation_name": "Org",
        "user_type": "administrator,teacher", "user_sub_type": "HM",
        "user_locations": {"state_name": "Karnataka", "district_name": "Mysuru", "block_name": "B1",
                           "cluster_name": "C1", "school_code": "29000001", "school_name": "GHPS",
                           "district_id": "d1"},
        **columns,
    }


PROFILE = {"userid": "u1", "firstname": "Asha", "lastname": "Rao",
           "email": CIPHER.encrypt("asha@example.com"), "phone": CIPHER.encrypt("9876543210")}
# 31 May 2023 20:00 UTC is 1 June 2023 in Kolkata.
UPDATED = datetime(2023, 5, 31, 20, 0)


def consent(status="ACTIVE", when=UPDATED):
    return {"user_id": "u1", "status": status, "last_updated_on": when}


def build(row, consent_row=None, profile=PROFILE):
    return build_report_row(CONFIG, row, asks_for_consent=bool(row.get("pii_consent_required")), consent=consent_row,
                            profile=profile, cipher=CIPHER)


def pii_cells(report_row):
    return {label: report_row[label] for label in PII_LABELS}


# --- the PII matrix --------------------------------------------------------------------------

@pytest.mark.parametrize("pii", [False, None])
@pytest.mark.parametrize("consent_row", [None, consent("active"), consent("revoked")])
def test_program_without_pii_consent_has_no_pii_columns(pii, consent_row):
    report_row, issues = build(enrollment(pii=pii), consent_row)
    assert not set(PII_LABELS) & set(report_row)
    assert list(report_row) == OPEN_COLUMNS
    assert issues == ()


def test_pii_program_without_consent_row():
    report_row, issues = build(enrollment(), None)
    assert pii_cells(report_row) == {NAME: "", PHONE: "", EMAIL: "", FLAG: "No", WHEN: ""}
    assert list(report_row) == list(CONFIG.columns)
    assert issues == ()


@pytest.mark.parametrize("status", ["revoked", "inactive", "", None, "active "])
def test_pii_program_with_inactive_consent(status):
    report_row, issues = build(enrollment(), consent(status))
    assert pii_cells(report_row) == {NAME: "", PHONE: "", EMAIL: "", FLAG: "No", WHEN: "01/06/2023"}
    assert issues == ()


@pytest.mark.parametrize("status", ["active", "ACTIVE", "Active"])
def test_pii_program_with_active_consent(status):
    report_row, issues = build(enrollment(), consent(status))
    assert pii_cells(report_row) == {NAME: "'Asha Rao'", PHONE: "9876543210", EMAIL: "asha@example.com",
                                 FLAG: "Yes", WHEN: "01/06/2023"}
    assert issues == ()


def test_consent_date_in_report_time_zone():
    assert CONFIG.time_zone == "Asia/Kolkata"  # the model config's, which the cases below are written for
    aware = datetime(2023, 5, 31, 18, 29, tzinfo=UTC)  # 23:59 in Kolkata
    assert build(enrollment(), consent(when=aware))[0][WHEN] == "31/05/2023"
    utc = build_report_row(dataclasses.replace(CONFIG, time_zone="UTC"), enrollment(), asks_for_consent=True,
                           consent=consent(), profile=PROFILE, cipher=CIPHER)[0]
    assert utc[WHEN] == "31/05/2023"
    assert build(enrollment(), consent(when=None))[0][WHEN] == ""


@pytest.mark.parametrize("first, last, expected", [
    ("Asha", None, "'Asha'"), (" ", "Rao", "'Rao'"), (None, None, ""), ("Asha ", " Rao", "'Asha Rao'"),
])
def test_username_skips_blanks(first, last, expected):
    profile = {**PROFILE, "firstname": first, "lastname": last}
    assert build(enrollment(), consent(), profile)[0][NAME] == expected


def test_missing_profile_is_counted():
    report_row, issues = build(enrollment(), consent(), None)
    assert pii_cells(report_row) == {NAME: "", PHONE: "", EMAIL: "", FLAG: "Yes", WHEN: "01/06/2023"}
    assert issues == (PROFILE_MISSING,)


def test_undecryptable_fields_are_blank_and_counted():
    profile = {**PROFILE, "email": PlatformCipher("other").encrypt("asha@example.com"), "phone": "garbage"}
    report_row, issues = build(enrollment(), consent(), profile)
    assert (report_row[EMAIL], report_row[PHONE], report_row[NAME]) == ("", "", "'Asha Rao'")
    assert issues == (EMAIL_UNDECRYPTABLE, PHONE_UNDECRYPTABLE)


def test_absent_contact_fields_are_blank_without_issue():
    profile = {"firstname": "Asha", "email": ""}
    report_row, issues = build(enrollment(), consent(), profile)
    assert (report_row[EMAIL], report_row[PHONE]) == ("", "")
    assert issues == ()


def test_profile_is_ignored_unless_consented():
    # A broken profile costs nothing when it is not used.
    assert build(enrollment(), consent("revoked"), {"email": "garbage"})[1] == ()


# --- other columns ---------------------------------------------------------------------------

def test_non_pii_columns():
    report_row, _ = build(enrollment(pii=False))
    assert report_row == {
        "User UUID": "u1", "Program Name": "'Program A'", "Program ID": "PGM-1", "State": "Karnataka",
        "District": "Mysuru", "Block": "B1", "Cluster": "C1", "School Id": "29000001", "School Name": "GHPS",
        "Usertype": "administrator,teacher", "Usersubtype": "HM", "Org Name": "Org",
    }


def test_nulls_and_missing_locations_are_blank():
    row = enrollment(pii=False, user_locations=None, program_name=None, organisation_name=None)
    del row["user_type"]
    report_row, _ = build(row)
    for label in ("State", "District", "Block", "Cluster", "School Id", "School Name",
                  "Program Name", "Org Name", "Usertype"):
        assert report_row[label] == ""
    assert build(enrollment(pii=False, user_locations={"state_name": "Goa"}))[0]["District"] == ""


@pytest.mark.parametrize("value, expected", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("a=b", "a=b"), ("'quoted'", "'quoted'"), ("", ""),
])
def test_formula_guard(value, expected):
    assert build(enrollment(pii=False, organisation_name=value))[0]["Org Name"] == expected


def test_quote_columns_are_quoted_not_guarded():
    assert build(enrollment(pii=False, program_name="=1+1"))[0]["Program Name"] == "'=1+1'"
    assert build(enrollment(pii=False, program_name=""))[0]["Program Name"] == ""
    phone = {**PROFILE, "phone": CIPHER.encrypt("+919876543210"), "firstname": "-Asha", "lastname": None}
    report_row, _ = build(enrollment(), consent(), phone)
    assert (report_row[PHONE], report_row[NAME]) == ("'+919876543210", "'-Asha'")


# --- sorting and CSV ----------------------------------------------------------------------

def test_sort_order_empty_first_then_code_points():
    def located(user, district, block=""):
        row = enrollment(pii=False, user_id=user,
                         user_locations={"district_name": district, "block_name": block} if district else None)
        return build(row)[0]

    built = [located("u4", "Ārea"), located("u3", "Zeta"), located("u2", "Agra", "b2"),
               located("u1", "Agra", "b1"), located("u6", None), located("u5", "Agra", ""), located("u0", "")]
    ordered = [r["User UUID"] for r in sorted(built, key=lambda r: sort_key(CONFIG, r))]
    assert ordered == ["u0", "u6", "u5", "u1", "u2", "u3", "u4"]
    assert sort_key(CONFIG, built[3]) == ("Agra", "b1", "", "", "u1")


def test_csv_line_is_rfc_4180():
    values = ["plain", "a,b", 'say "hi"', "two\nlines", "", "'Program A'", "Ārea"]
    line = csv_line(values)
    assert line == 'plain,"a,b","say ""hi""","two\nlines",,\'Program A\',Ārea\r\n'
    assert next(csv.reader(io.StringIO(line))) == values


# --- property: PII only for consented users of PII programs --------------------------------

MARK = "PII"  # every PII value carries it; nothing else can
pii_text = st.text(alphabet="abc xyz", max_size=8).map(lambda s: MARK + s)
plain = st.none() | st.text(alphabet="abcdef=+-@ ,", max_size=6)
statuses = st.sampled_from(["active", "ACTIVE", "Active", "revoked", "inactive", "", None])


@st.composite
def scenarios(draw):
    row = {
        "user_id": draw(st.text(alphabet="0123456789abcdef", min_size=1, max_size=6)),
        "pii_consent_required": draw(st.sampled_from([True, False, None])),
        "program_name": draw(plain), "program_externalId": draw(plain), "organisation_name": draw(plain),
        "user_type": draw(plain), "user_sub_type": draw(plain),
        "user_locations": draw(st.none() | st.dictionaries(st.sampled_from(CONFIG.location_fields), plain)),
    }
    consent_row = draw(st.none() | st.builds(
        consent, statuses, st.none() | st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1))))
    plain_profile = draw(st.none() | st.fixed_dictionaries({
        "firstname": st.none() | pii_text, "lastname": st.none() | pii_text,
        "email": st.none() | pii_text, "phone": st.none() | pii_text,
    }))
    return row, consent_row, plain_profile


def encrypted(plain_profile):
    """The user cache's form of a profile: email and phone encrypted."""
    if plain_profile is None:
        return None
    return {**plain_profile, **{field: CIPHER.encrypt(plain_profile[field])
                                for field in ("email", "phone") if plain_profile[field]}}


@settings(max_examples=200)
@given(scenarios())
def test_pii_only_with_active_consent(scenario):
    row, consent_row, plain_profile = scenario
    report_row, issues = build(row, consent_row, encrypted(plain_profile))
    pii = bool(row["pii_consent_required"])
    assert list(report_row) == (ALL_COLUMNS if pii else OPEN_COLUMNS)
    active = consent_row is not None and (consent_row["status"] or "").lower() == "active"
    if pii and active:
        assert report_row[FLAG] == "Yes"
        if plain_profile is not None:
            for label, field in ((EMAIL, "email"), (PHONE, "phone")):
                assert report_row[label] == (plain_profile[field] or "")
        assert issues == (() if plain_profile is not None else (PROFILE_MISSING,))
    else:
        assert all(MARK not in cell for cell in report_row.values())
        assert all(report_row.get(label, "") == "" for label in (NAME, PHONE, EMAIL))
        assert issues == ()


@pytest.mark.parametrize("asks_for_consent", [True, False])
def test_the_header_names_the_cells_of_every_report_row_in_order(asks_for_consent):
    report_row, _ = build(enrollment(pii=asks_for_consent), None, None)
    assert header(asks_for_consent, CONFIG) == list(report_row)
    assert len(header(asks_for_consent, CONFIG)) == len(CONFIG.columns) - (0 if asks_for_consent else 5)
