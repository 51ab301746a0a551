"""LookUpAndBuildReportRows on in-memory inputs (TestPipeline, in-process runner): the report's rows, its
lookups asked only for whom they should be, and its counters."""
from datetime import date, datetime

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from programusers import report_rows, runners
from programusers.crypto import PlatformCipher
from programusers.model_config import default_model_config
from programusers.transforms.report import LookUpAndBuildReportRows

CONFIG = default_model_config()
SALT = "transform-salt"
CIPHER = PlatformCipher(SALT)
LOCATIONS = {"state_name": "Karnataka", "district_name": "MYSURU", "block_name": "B1", "cluster_name": "C1",
             "school_code": "29000001", "school_name": "GHPS", "district_id": "d1"}


@pytest.fixture(autouse=True)
def salt(monkeypatch):
    monkeypatch.setenv("SUNBIRD_ENCRYPTION_KEY", SALT)


def pipeline():
    return test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner"))


def row(user_id, pii=True, **columns):
    return {"program_id": "p1", "program_externalId": "PGM-1", "program_name": "Program A",
            "pii_consent_required": pii, "user_id": user_id, "user_locations": LOCATIONS,
            "organisation_id": "o1", "organisation_name": "Org", "user_type": "teacher", "user_sub_type": None,
            "created_at": date(2023, 1, 1), "updated_at": date(2023, 1, 2), **columns}


class FakeLookupHandler:
    """A lookup handler over a dict that fails the pipeline when asked for a user it should not be, or
    when called while not open."""

    def __init__(self, rows, allowed_ids):
        self._rows, self._allowed_ids, self._open = rows, set(allowed_ids), False

    def __enter__(self):
        self._open = True
        return self

    def __call__(self, user_ids):
        assert self._open and set(user_ids) <= self._allowed_ids, sorted(set(user_ids) - self._allowed_ids)
        return {u: self._rows[u] for u in user_ids if u in self._rows}

    def __exit__(self, *exc_info):
        self._open = False

    def count_throttled(self):
        assert self._open


ENROLLMENTS = [row("u-active"), row("u-revoked"), row("u-none"), row("u-nocache"), row("u-open", pii=False)]
CONSENTS = {"u-active": {"status": "Active", "last_updated_on": datetime(2023, 5, 31, 20)},
            "u-revoked": {"status": "REVOKED", "last_updated_on": datetime(2023, 3, 1, 10)},
            "u-nocache": {"status": "ACTIVE", "last_updated_on": datetime(2023, 3, 1, 10)},
            "u-open": {"status": "ACTIVE", "last_updated_on": datetime(2023, 3, 1, 10)}}
PROFILES = {"u-active": {"firstname": "Zoë", "lastname": " ", "email": CIPHER.encrypt("zoe@example.org"),
                         "phone": CIPHER.encrypt("9876543210")},
            "u-revoked": {"firstname": "Never", "email": CIPHER.encrypt("never@example.org")},
            "u-open": {"firstname": "Open", "email": CIPHER.encrypt("open@example.org")}}


def expected(user_id, pii=("", "", "", "No", "")):
    """The (sort key, CSV line) of a user's report row."""
    common = {"User UUID": user_id, "Program Name": "'Program A'", "Program ID": "PGM-1", "State": "Karnataka",
              "District": "MYSURU", "Block": "B1", "Cluster": "C1", "School Id": "29000001", "School Name": "GHPS",
              "Usertype": "teacher", "Usersubtype": "", "Org Name": "Org"}
    labels = ("User Name(On user consent)", "Mobile number(On user consent)", "Email ID(On user consent)",
              "Consent Provided", "Consent Provided Date")
    cells = {**common, **dict(zip(labels, pii or ()))}
    header = report_rows.header(pii is not None, CONFIG)
    return (tuple(cells[label] for label in ("District", "Block", "Cluster", "School Id", "User UUID")),
            report_rows.csv_line(cells[label] for label in header))


def pages(rows, size=2):
    """The rows as the read hands them on, a list per page."""
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def build(asks_for_consent, consents_asked, profiles_asked, expected_lines):
    with pipeline() as p:
        line_lists = (p
                      | beam.Create(pages(ENROLLMENTS))
                      | LookUpAndBuildReportRows(CONFIG, asks_for_consent, FakeLookupHandler(CONSENTS, consents_asked),
                                                 FakeLookupHandler(PROFILES, profiles_asked)))
        assert_that(line_lists | beam.FlatMap(list), equal_to(expected_lines))


def test_when_the_program_asks_consent_is_read_for_every_row_and_profiles_only_when_consented():
    build(True, [r["user_id"] for r in ENROLLMENTS], ["u-active", "u-nocache", "u-open"], [
        expected("u-active", ("'Zoë'", "9876543210", "zoe@example.org", "Yes", "01/06/2023")),
        expected("u-revoked", ("", "", "", "No", "01/03/2023")),
        expected("u-none"),
        expected("u-nocache", ("", "", "", "Yes", "01/03/2023")),
        # Its own row says the program did not ask (written before it changed its mind): the program's flag wins.
        expected("u-open", ("'Open'", "", "open@example.org", "Yes", "01/03/2023"))])


def test_when_the_program_does_not_ask_nothing_personal_is_read_or_written():
    build(False, [], [], [expected(r["user_id"], None) for r in ENROLLMENTS])


def test_report_rows_count_their_issues():
    rows = [row("u1"), row("u2")]
    consents = {u: {"status": "active", "last_updated_on": None} for u in ("u1", "u2")}
    profiles = {"u2": {"firstname": "A", "email": "not-a-ciphertext"}}
    p = pipeline()
    _ = (p | beam.Create([rows]) | LookUpAndBuildReportRows(CONFIG, True, FakeLookupHandler(consents, ["u1", "u2"]),
                                                            FakeLookupHandler(profiles, ["u1", "u2"])))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters == {"report_rows_built": 2, "consents_found": 2, "profiles_found": 1, "profile_missing": 1,
                        "email_undecryptable": 1}
