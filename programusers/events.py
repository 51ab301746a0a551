"""A programUsers Kafka event -> one program_enrollment mutation, or a dead letter (SPEC §2).

Pure functions: no Beam, Kafka or Cassandra here, and nothing raises for any input.

Decisions the SPEC leaves open:
- All strings are stripped; a blank string is null.
- ``programId``/``userId`` must be JSON strings (or Mongo's ``{"$oid": "..."}``); numbers are rejected.
- Top-level ``programExternalId``, ``programName``, ``createdAt``, ``updatedAt``: an absent key leaves
  the column untouched, null or blank writes null (the same rule as the ``userProfile`` sections).
- ``pii_consent_required`` is always written, false when ``requestForPIIConsent`` is absent, null or
  blank, so the column is never null. Booleans also accept "true"/"false" strings in any case.
- ``null`` entries inside ``userLocations``/``profileUserTypes`` are skipped like entries without a type;
  when two locations share a type, the later one's non-blank values win.
- A ``deleted: true`` event needs only valid ids and dates; its other fields are not checked.
- An all-digit string timestamp is epoch millis, never a compact ISO date.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?")
_MILLIS = re.compile(r"[+-]?\d+(\.\d+)?")
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string",
               list: "array", dict: "object", type(None): "null"}


@dataclass(frozen=True)
class EnrollmentUpsert:
    program_id: str
    user_id: str
    columns: dict[str, Any]  # only the columns to write: absent sections are left out
    timestamp_micros: int  # for CQL USING TIMESTAMP


@dataclass(frozen=True)
class EnrollmentDelete:
    program_id: str
    user_id: str
    timestamp_micros: int


class Reason(StrEnum):
    """Why a record was dead-lettered: the stable code a dead letter carries as its `reason`."""
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_TIMESTAMP = "bad_timestamp"
    WRITE_FAILED = "write_failed"  # Cassandra rejected the write (not an outage: that holds the stream)
    NOT_A_DEAD_LETTER = "not_a_dead_letter"  # replay: a record of the dead-letter topic that is none of ours


@dataclass(frozen=True)
class DeadLetter:
    reason: Reason
    field: str | None  # path of the offending field, e.g. "userProfile.userLocations[2].type"
    detail: str  # never contains a field's value (values may be PII)


class TimestampError(ValueError):
    """An unparseable timestamp; the message never contains the value."""


class _Rejected(Exception):
    def __init__(self, reason: Reason, field: str, detail: str):
        super().__init__(reason)
        self.dead_letter = DeadLetter(reason, field, detail)


def parse_timestamp(value: object) -> datetime:
    """ISO-8601 text (no offset = UTC), a bare date, epoch millis (number or numeric text), or any of
    these as Mongo extended JSON ``{"$date": ...}`` / ``{"$date": {"$numberLong": "..."}}``."""
    if isinstance(value, dict) and value.keys() == {"$date"}:
        value = value["$date"]
        if isinstance(value, dict) and value.keys() == {"$numberLong"}:
            value = value["$numberLong"]
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _EPOCH + timedelta(milliseconds=value)
        if isinstance(value, str):
            text = value.strip()
            if _MILLIS.fullmatch(text):
                return _EPOCH + timedelta(milliseconds=float(text) if "." in text else int(text))
            if _ISO.fullmatch(text):
                return _as_utc(datetime.fromisoformat(text))
    # The underlying messages may quote the value, so they are not passed on.
    except (ValueError, OverflowError):
        raise TimestampError("timestamp out of range or not a valid date") from None
    raise TimestampError(f"unrecognised timestamp format ({_json_type(value)})")


def parse_event(raw: bytes | str, arrival_micros: int) -> EnrollmentUpsert | EnrollmentDelete | DeadLetter:
    """Decode one Kafka record value (UTF-8 JSON) and map it with `event_to_mutation`."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return DeadLetter(Reason.INVALID_JSON, None, f"payload is not UTF-8 ({e.reason} at byte {e.start})")
    if not isinstance(raw, str):
        return DeadLetter(Reason.INVALID_JSON, None, f"payload must be bytes or text, got {type(raw).__name__}")
    try:
        event = _DECODER.decode(raw)
    except json.JSONDecodeError as e:
        return DeadLetter(Reason.INVALID_JSON, None, f"{e.msg} at line {e.lineno} column {e.colno}")
    except (ValueError, RecursionError):
        return DeadLetter(Reason.INVALID_JSON, None, "NaN, Infinity, an oversized number or too deep nesting")
    return event_to_mutation(event, arrival_micros)


def event_to_mutation(event: Any, arrival_micros: int) -> EnrollmentUpsert | EnrollmentDelete | DeadLetter:
    """Map an already-decoded event; the write is stamped from updatedAt, createdAt, else arrival."""
    if not isinstance(event, dict):
        return DeadLetter(Reason.NOT_AN_OBJECT, None, f"event must be a JSON object, got {_json_type(event)}")
    try:
        program_id = _required_id(event, "programId")
        user_id = _required_id(event, "userId")
        deleted = _flag(event.get("deleted"), "deleted")
        stamps = {key: _timestamp(event[key], key) for key in ("createdAt", "updatedAt") if key in event}
        stamp = stamps.get("updatedAt") or stamps.get("createdAt")
        micros = (stamp - _EPOCH) // _MICROSECOND if stamp else arrival_micros
        if deleted:
            return EnrollmentDelete(program_id, user_id, micros)
        return EnrollmentUpsert(program_id, user_id, _columns(event, stamps), micros)
    except _Rejected as rejected:
        return rejected.dead_letter


# Under Kafka's default 1 MB record limit: a dead letter too large to write would stop the stream.
MAX_DEAD_LETTER_BYTES = 900_000


class RecordOrigin(NamedTuple):
    """Where a Kafka record was read, as its dead letter names it."""
    topic: str
    partition: int
    offset: int
    timestamp: int | None = None  # the record's Kafka timestamp, epoch millis


def dead_letter_value(dead: DeadLetter, payload: bytes | None, origin: RecordOrigin, failed_at: datetime, *,
                      max_bytes: int = MAX_DEAD_LETTER_BYTES) -> bytes:
    """The dead-letter topic's JSON value; `payload` is the original record value (null for a tombstone),
    `origin.timestamp` the original record's Kafka timestamp: a replay stamps an event without
    dates with it, as the ingest did, so replaying stays idempotent. A value over `max_bytes` (JSON
    escapes can make a payload up to six times longer) carries the payload's longest prefix that fits,
    with `payload_truncated` and the original's `payload_bytes`: the whole record stays at its offset."""
    letter = {
        "reason": dead.reason,
        "field": dead.field,
        "detail": dead.detail,
        "payload": None if payload is None else payload.decode("utf-8", errors="replace"),
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "timestamp": origin.timestamp,
        "failed_at": _as_utc(failed_at).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    value = json.dumps(letter).encode()
    if len(value) <= max_bytes:
        return value
    text, letter["payload_truncated"], letter["payload_bytes"] = letter["payload"], True, len(payload)
    fits, cut = 0, len(text)  # the longest prefix that fits, by bisection
    while fits < cut:
        middle = (fits + cut + 1) // 2
        letter["payload"] = text[:middle]
        if len(json.dumps(letter).encode()) <= max_bytes:
            fits = middle
        else:
            cut = middle - 1
    letter["payload"] = text[:fits]
    return json.dumps(letter).encode()


def _columns(event: dict, stamps: dict[str, datetime | None]) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "pii_consent_required": _flag(event.get("requestForPIIConsent"), "requestForPIIConsent"),
    }
    for key, column in (("programExternalId", "program_externalId"), ("programName", "program_name")):
        if key in event:
            columns[column] = _text(event[key], key)
    for key, column in (("createdAt", "created_at"), ("updatedAt", "updated_at")):
        if key in stamps:
            columns[column] = stamps[key] and stamps[key].date()

    profile = event.get("userProfile")
    if profile is None:
        return columns
    if not isinstance(profile, dict):
        raise _wrong_type("userProfile", "an object", profile)
    if "userLocations" in profile:
        columns["user_locations"] = _locations(profile["userLocations"], "userProfile.userLocations")
    if "profileUserTypes" in profile:
        columns["user_type"], columns["user_sub_type"] = _user_types(
            profile["profileUserTypes"], "userProfile.profileUserTypes")
    if "rootOrg" in profile:
        columns["organisation_id"], columns["organisation_name"] = _root_org(
            profile["rootOrg"], "userProfile.rootOrg")
    return columns


def _locations(value: Any, field: str) -> dict[str, str] | None:
    locations: dict[str, str] = {}
    for path, entry in _entries(value, field):
        kind = _text(entry.get("type"), f"{path}.type")
        if kind is None:
            continue
        for attr in ("name", "id", "code"):
            raw = entry.get(attr)
            if attr in ("code", "id") and isinstance(raw, int) and not isinstance(raw, bool):
                raw = str(raw)
            if (text := _text(raw, f"{path}.{attr}")) is not None:
                locations[f"{kind.lower()}_{attr}"] = text
    return locations or None


def _user_types(value: Any, field: str) -> tuple[str | None, str | None]:
    types: dict[str, None] = {}  # dicts as insertion-ordered sets
    sub_types: dict[str, None] = {}
    for path, entry in _entries(value, field):
        if user_type := _text(entry.get("type"), f"{path}.type"):
            types[user_type.lower()] = None
        if sub_type := _text(entry.get("subType"), f"{path}.subType"):
            sub_types[sub_type.upper()] = None
    return ",".join(types) or None, ",".join(sub_types) or None


def _root_org(value: Any, field: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise _wrong_type(field, "an object", value)
    return _text(value.get("id"), f"{field}.id"), _text(value.get("orgName"), f"{field}.orgName")


def _entries(value: Any, field: str):
    """(path, object) for each non-null entry of a JSON array that may itself be null."""
    if value is None:
        return
    if not isinstance(value, list):
        raise _wrong_type(field, "an array", value)
    for i, entry in enumerate(value):
        path = f"{field}[{i}]"
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise _wrong_type(path, "an object", entry)
        yield path, entry


def _required_id(event: dict, key: str) -> str:
    value = event.get(key)
    if isinstance(value, dict) and value.keys() == {"$oid"}:
        value = value["$oid"]
    if (text := _text(value, key)) is None:
        raise _Rejected(Reason.MISSING_FIELD, key, f"{key} is required and must not be blank")
    return text


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong_type(field, "a string", value)
    try:
        value.encode("utf-8")  # a lone surrogate from a "\udXXX" escape cannot be stored
    except UnicodeEncodeError:
        raise _Rejected(Reason.WRONG_TYPE, field, "string is not valid Unicode") from None
    return value.strip() or None


def _flag(value: Any, field: str) -> bool:
    """A JSON boolean or "true"/"false" in any case; null or blank is false."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, str) and (text := value.strip().lower()) in ("", "true", "false"):
        return text == "true"
    raise _wrong_type(field, "a boolean", value)


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse_timestamp(value)
    except TimestampError as e:
        raise _Rejected(Reason.BAD_TIMESTAMP, field, str(e)) from None


def _wrong_type(field: str, expected: str, value: Any) -> _Rejected:
    return _Rejected(Reason.WRONG_TYPE, field, f"expected {expected}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    """The JSON type name of a decoded value, safe to show in place of the value."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _reject_constant(name: str) -> None:
    raise ValueError(name)


# One decoder for every event: json.loads with an argument builds a new one each call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
