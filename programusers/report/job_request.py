"""The exhaust's job_request rows (SPEC §3): which are pending, which are duplicates, and what we write.

Conventions of ours where the platform leaves a choice:
- ``tag`` is ``<program_id>:<requested_channel>`` (the platform API's ``<tag>:<channel>`` shape with the
  program as the tag), or the bare program id when no channel is given.
- ``request_id`` is 32 upper-case hex characters, like the platform's MD5-based ids.
- A report is ``<request_id>_<yyyyMMdd>.csv`` (or ``.zip``), dated in the report time zone, under
  ``<output>/program-user-exhaust/``; ``download_urls`` holds that path as written.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from programusers.filters import RequestError
from programusers.schema import CONSENT_TABLE as CONSENT
from programusers.schema import ENROLLMENT_TABLE as ENROLLMENT
from programusers.schema import ERR_MESSAGE_WIDTH

JOB_ID = "program-user-exhaust"
SUBMITTED, PROCESSING, SUCCESS, FAILED = "SUBMITTED", "PROCESSING", "SUCCESS", "FAILED"
MAX_ITERATIONS = 3  # a FAILED request is retried while its iteration is below this
NO_DATA_FOUND = "No Data Found"
_COLUMN_WIDTHS = {"tag": 100, "request_id": 50, "requested_by": 50, "requested_channel": 50, "encryption_key": 50}


@dataclass(frozen=True)
class JobRequest:
    tag: str
    request_id: str
    request_data: object  # as stored: parsed JSON, text, or None
    requested_by: str | None = None
    requested_channel: str | None = None
    encryption_key: str | None = None
    iteration: int = 0

    def too_long(self) -> str | None:
        """The first column whose value exceeds job_request's width. Checked before the INSERT: a failing
        statement would be logged by the PostgreSQL server with its values (the zip password among them)."""
        return next((column for column, width in _COLUMN_WIDTHS.items()
                     if len(getattr(self, column) or "") > width), None)

    def duplicate_key(self) -> tuple:
        """Requests with equal keys in one run are produced once and share the result."""
        data = json.dumps(self.request_data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return data, self.encryption_key, self.requested_by


def group_duplicates(requests: Iterable[JobRequest]) -> list[list[JobRequest]]:
    """Pending requests grouped by duplicate key, in first-seen order; each group's first one is produced."""
    groups: dict[tuple, list[JobRequest]] = {}
    for request in requests:
        groups.setdefault(request.duplicate_key(), []).append(request)
    return list(groups.values())


def new_request_id() -> str:
    return uuid.uuid4().hex.upper()


def tag_for(program_id: str, channel: str | None) -> str:
    return f"{program_id}:{channel}" if channel else program_id


def filter_value(operator: str, text: str) -> str | list[str]:
    """A command-line filter value: comma-separated for ``in`` (blank items dropped), else as given."""
    if operator == "in":
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def request_data(program_id: str, filters: Iterable[tuple[str, str, str]] = ()) -> dict:
    """The platform UI's request_data for a program plus (name, operator, value text) filters.

    A name prefixed ``user_consent.`` filters the consent table (``user_consent.user_id``); any other
    name, optionally prefixed ``program_enrollment.``, filters the enrollment table."""
    tables = {ENROLLMENT: [{"name": "program_id", "operator": "=", "value": program_id}],
              CONSENT: [{"name": "object_id", "operator": "=", "value": program_id}]}
    for name, operator, text in filters:
        table, dot, column = name.partition(".")
        if not (dot and table in tables):
            table, column = ENROLLMENT, name
        tables[table].append({"name": column, "operator": operator, "value": filter_value(operator, text)})
    return {"filters": [{"table_name": table, "table_filters": items} for table, items in tables.items()]}


_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,50}")


def report_name(request_id: str, when: datetime, tz: tzinfo) -> str:
    """The report's file name without extension: ``<request_id>_<yyyyMMdd>`` in the report time zone.
    Raises RequestError for an id that could leave the reports' folder or prefix (`/`, `..`, `%`): ids
    are ours, but job_request is the platform's table."""
    if not _SAFE_ID.fullmatch(request_id):
        raise RequestError("request_id may hold only letters, digits, '_' and '-'")
    return f"{request_id}_{when.astimezone(tz):%Y%m%d}"


def err_message(text: str) -> str:
    return text[:ERR_MESSAGE_WIDTH]
