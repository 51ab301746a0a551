"""Report request filters (SPEC section 3), parsed from an allow-list into typed predicates.

Nothing here is ever turned into CQL or SQL text: the reader fetches the program's partition and
keeps the rows for which ``ReportRequest.matches`` is true.

Semantics where the platform is silent:
- ``!=`` is true for a null (or missing) value: null is not equal to the value.
- Date filters define a range a null date has no place in, so with any filter on ``created_at``
  or ``updated_at`` a null date does not match (``!=`` included). Without one, null dates are kept
  and other dates must lie in 1901-01-01..2101-01-01.
- ``user_type`` / ``user_sub_type`` hold comma-joined values ("administrator,teacher"): ``=`` and
  ``in`` match when any element equals a wanted value, case-insensitively; ``!=`` when none does.
- ``user_consent.user_id`` filters restrict the report to those users (several are intersected).
- ``user_consent.object_id`` adds nothing but must equal the program id.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime

from programusers.schema import CONSENT_TABLE as CONSENT
from programusers.schema import ENROLLMENT_TABLE as ENROLLMENT
from programusers.schema import ERR_MESSAGE_WIDTH

DATE_COLUMNS = ("created_at", "updated_at")
DEFAULT_DATE_RANGE = (date(1901, 1, 1), date(2101, 1, 1))
_TEXT_COLUMNS = frozenset({"program_id", "program_externalId", "organisation_id", "user_type", "user_sub_type"})
_MULTI_VALUED = frozenset({"user_type", "user_sub_type"})
_LOCATION = re.compile(r"user_locations\['([a-z0-9_]+)'\]")
_TEXT_OPS = ("=", "!=", "in")
_DATE_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
             ">": operator.gt, ">=": operator.ge}
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class RequestError(ValueError):
    """An invalid report request. The message is short and safe to store in err_message."""

    def __init__(self, message: str):
        super().__init__(message[:ERR_MESSAGE_WIDTH])


def _as_date(value) -> date:
    # Accepts datetime and the Cassandra driver's Date too (both have .date()).
    return value if isinstance(value, date) and not isinstance(value, datetime) else value.date()


def _elements(value: str) -> set[str]:
    return {part.strip().casefold() for part in value.split(",")}


@dataclass(frozen=True)
class Predicate:
    column: str  # program_enrollment column
    op: str
    value: str | date | frozenset[str]  # frozenset for "in"
    key: str | None = None  # user_locations map key

    def matches(self, row: Mapping) -> bool:
        actual = row.get(self.column)
        if self.key is not None:
            actual = (actual or {}).get(self.key)
        if actual is None:
            return self.op == "!=" and self.column not in DATE_COLUMNS
        if self.column in DATE_COLUMNS:
            return _DATE_OPS[self.op](_as_date(actual), self.value)
        wanted = self.value if self.op == "in" else {self.value}
        if self.column in _MULTI_VALUED:
            found = not _elements(actual).isdisjoint(w.casefold() for w in wanted)
        else:
            found = actual in wanted
        return not found if self.op == "!=" else found


@dataclass(frozen=True)
class ReportRequest:
    program_id: str
    predicates: tuple[Predicate, ...]  # includes the program_id "=" filter itself
    user_ids: frozenset[str] | None = None  # None: no user_consent.user_id filter

    def matches(self, row: Mapping) -> bool:
        """Whether an enrollment row (Cassandra column names; a missing column is null) passes."""
        if self.user_ids is not None and row.get("user_id") not in self.user_ids:
            return False
        if not all(p.matches(row) for p in self.predicates):
            return False
        filtered = {p.column for p in self.predicates}
        low, high = DEFAULT_DATE_RANGE
        return all(row.get(c) is None or low <= _as_date(row[c]) <= high for c in DATE_COLUMNS if c not in filtered)


def _shown(text) -> str:
    return repr(text if len(str(text)) <= 60 else f"{str(text)[:60]}...")


def _check_op(field: str, op, allowed) -> None:
    if op not in allowed:
        raise RequestError(f"filter {field}: operator {_shown(op)} is not allowed (use {', '.join(allowed)})")


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _text_value(field: str, op: str, value) -> str | frozenset[str]:
    if op == "in":
        if not (isinstance(value, list) and value and all(_is_text(v) for v in value)):
            raise RequestError(f"filter {field}: value for 'in' must be a non-empty list of non-empty strings")
        return frozenset(value)
    if not _is_text(value):
        raise RequestError(f"filter {field}: value must be a non-empty string")
    return value


def _date_value(field: str, value) -> date:
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        with suppress(ValueError):  # e.g. 2023-02-30
            return date.fromisoformat(value)
    raise RequestError(f"filter {field}: value must be a real date as YYYY-MM-DD")


def _enrollment_predicate(name: str, op, value) -> Predicate:
    field = f"{ENROLLMENT}.{name}"
    if name in DATE_COLUMNS:
        _check_op(field, op, tuple(_DATE_OPS))
        return Predicate(name, op, _date_value(field, value))
    location = _LOCATION.fullmatch(name)
    if location:
        column, key = "user_locations", location[1]
    elif name in _TEXT_COLUMNS:
        column, key = name, None
    else:
        raise RequestError(f"filter {ENROLLMENT}.{_shown(name)} is not allowed")
    _check_op(field, op, _TEXT_OPS)
    return Predicate(column, op, _text_value(field, op, value), key)


def _load(request_data) -> dict:
    if request_data is None or request_data == "":
        raise RequestError("request_data is missing")
    if isinstance(request_data, str):
        try:
            request_data = json.loads(request_data)
        except json.JSONDecodeError:
            raise RequestError("request_data is not valid JSON") from None
    if not isinstance(request_data, Mapping):
        raise RequestError("request_data must be a JSON object")
    params = request_data.get("params")
    if "filters" not in request_data and isinstance(params, Mapping):
        return params  # the platform API's shape
    return request_data


def _filters(request_data):
    """Yield (table_name, name, operator, value) for every filter, checking the structure."""
    groups = _load(request_data).get("filters")
    if not isinstance(groups, list):
        raise RequestError("request_data has no filters list (at the top level or under params)")
    for i, group in enumerate(groups):
        if not (isinstance(group, Mapping) and isinstance(group.get("table_filters"), list)):
            raise RequestError(f"filters[{i}] must be an object with table_name and a table_filters list")
        table = group.get("table_name")
        if table not in (ENROLLMENT, CONSENT):
            raise RequestError(f"filters[{i}].table_name {_shown(table)} is not allowed ({ENROLLMENT}, {CONSENT})")
        for j, item in enumerate(group["table_filters"]):
            if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)):
                raise RequestError(f"filters[{i}].table_filters[{j}] must be an object with name, operator, value")
            yield table, item["name"], item.get("operator"), item.get("value")


def parse_request(request_data: Mapping | str | None) -> ReportRequest:
    """Parse a job_request's request_data; raises RequestError."""
    program_ids, predicates, object_ids = [], [], []
    user_ids = None
    for table, name, op, value in _filters(request_data):
        field = f"{table}.{name}"
        if table == ENROLLMENT:
            predicates.append(_enrollment_predicate(name, op, value))
            if name == "program_id" and op == "=":
                program_ids.append(value)
        elif name == "object_id":
            _check_op(field, op, ("=",))
            object_ids.append(_text_value(field, op, value))
        elif name == "user_id":
            _check_op(field, op, ("=", "in"))
            ids = _text_value(field, op, value)
            ids = ids if op == "in" else frozenset({ids})
            user_ids = ids if user_ids is None else user_ids & ids
        else:
            raise RequestError(f"filter {CONSENT}.{_shown(name)} is not allowed")
    if len(program_ids) != 1:
        raise RequestError(f"exactly one {ENROLLMENT}.program_id '=' filter is required, found {len(program_ids)}")
    program_id = program_ids[0]
    if any(o != program_id for o in object_ids):
        raise RequestError(f"filter {CONSENT}.object_id must equal the program_id filter")
    return ReportRequest(program_id, tuple(predicates), user_ids)
