"""One report row per enrollment row (SPEC section 3, rows): a line of the report's CSV.

A report row maps CSV labels to their final cell strings (quoted, formula-guarded), so sorting and
writing need no further knowledge of the config. Values compare in code-point order, as Spark's
string sort does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo

from programusers.crypto import DecryptionError, PlatformCipher
from programusers.model_config import PII_FIELDS, ReportConfig

# What a report row is built from: the enrollment row's columns (read by position: unquoted CQL names come
# back lower-cased) and the user-cache fields.
ENROLLMENT_COLUMNS = ("program_id", "program_externalId", "program_name", "pii_consent_required", "user_id",
                      "user_locations", "organisation_id", "organisation_name", "user_sub_type", "user_type",
                      "created_at", "updated_at")
PROFILE_FIELDS = ("firstname", "lastname", "email", "phone")

# Issue names returned by build_report_row, for the caller's counters.
PROFILE_MISSING = "profile_missing"
EMAIL_UNDECRYPTABLE = "email_undecryptable"
PHONE_UNDECRYPTABLE = "phone_undecryptable"
_ENCRYPTED = (("email", EMAIL_UNDECRYPTABLE), ("phone", PHONE_UNDECRYPTABLE))
# Spreadsheet formula triggers (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def consent_active(consent: Mapping | None) -> bool:
    return consent is not None and (consent.get("status") or "").casefold() == "active"


def _date_text(moment: datetime | None, tz: tzinfo) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:  # the Cassandra driver returns naive UTC timestamps
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%d/%m/%Y")


def _pii_values(consent, profile, cipher: PlatformCipher, tz: tzinfo, issues: list[str]) -> dict:
    active = consent_active(consent)
    values = {
        "consentflag": "Yes" if active else "No",
        "consentprovideddate": _date_text(consent.get("last_updated_on") if consent else None, tz),
    }
    if not active:
        return values
    if profile is None:
        issues.append(PROFILE_MISSING)
        return values
    names = (profile.get("firstname"), profile.get("lastname"))
    values["username"] = " ".join(n.strip() for n in names if n and n.strip())
    for field, issue in _ENCRYPTED:
        if profile.get(field):
            try:
                values[field] = cipher.decrypt(profile[field])
            except DecryptionError:
                issues.append(issue)
    return values


def _cell(config: ReportConfig, label: str, value) -> str:
    text = "" if value is None else str(value)
    if not text:
        return ""
    if label in config.quote_labels:
        return f"'{text}'"
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def build_report_row(
    config: ReportConfig,
    enrollment: Mapping,
    *,
    asks_for_consent: bool,
    consent: Mapping | None,
    profile: Mapping | None,
    cipher: PlatformCipher,
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The report row of one enrollment row, and the issue names to count for it.

    ``asks_for_consent`` is the program's flag (see transforms/report.py), not the row's own
    pii_consent_required; ``consent`` is the user's user_consent row for the program (``status``,
    ``last_updated_on``); ``profile`` the user's Redis hash (``firstname``, ``lastname``, encrypted
    ``email``/``phone``). The profile is only read when the program asks for consent and the user's consent
    is active. Dates are shown in the config's time zone.
    """
    pii = asks_for_consent
    issues: list[str] = []
    locations = enrollment.get("user_locations") or {}
    values = {field: locations.get(field) if field in config.location_fields else enrollment.get(field)
              for field in config.fields if field not in PII_FIELDS}
    if pii:
        values.update(_pii_values(consent, profile, cipher, config.tz, issues))
    report_row = {label: _cell(config, label, values.get(field))
                  for label, field in zip(config.columns, config.fields) if pii or field not in PII_FIELDS}
    return report_row, tuple(issues)


def header(asks_for_consent: bool, config: ReportConfig) -> list[str]:
    """The labels of every report row of a program (build_report_row's keys, in order): all the columns when the
    program asks for consent, else all but the PII ones."""
    return [label for label, field in zip(config.columns, config.fields)
            if asks_for_consent or field not in PII_FIELDS]


def sort_key(config: ReportConfig, report_row: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(report_row.get(label, "") for label in config.sort_labels)


def csv_line(values) -> str:
    """One RFC 4180 line, CRLF-terminated as the RFC prescribes."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()
