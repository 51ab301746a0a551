"""The platform's data-exhaust API contract (analytics-api's JobAPIService and APIValidator), pure: request
ids, the response envelope, a job as the API shows it, and the submit body's validation."""
from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime

from programusers import filters
from programusers.report.job_request import JOB_ID, JobRequest

SUBMIT, READ, LIST = ("ekstep.analytics.dataset.request.submit", "ekstep.analytics.dataset.request.info",
                      "ekstep.analytics.dataset.request.list")
OK, CLIENT_ERROR, FORBIDDEN, UNAUTHORIZED, NOT_FOUND, TOO_LARGE, SERVER_ERROR = (
    "OK", "CLIENT_ERROR", "FORBIDDEN", "UNAUTHORIZED", "RESOURCE_NOT_FOUND", "REQUEST_TOO_LARGE", "SERVER_ERROR")
HTTP_STATUS = {OK: 200, CLIENT_ERROR: 400, UNAUTHORIZED: 401, FORBIDDEN: 403, NOT_FOUND: 404, TOO_LARGE: 413,
               SERVER_ERROR: 500}
NO_JOB = "no job available with the given request_id and tag"
MAX_TAG = 100  # job_request.tag, with the channel suffix
MAX_KEY = 50  # job_request.encryption_key


class Rejected(Exception):
    """A request the API refuses: its response code and a message safe to send back (no input quoted)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def request_id(dataset: str, tag: str, requested_by: str, channel: str, day: date, dataset_type: str | None) -> str:
    """The platform's id: the upper-case hex MD5 of dataset|tag|requestedBy|channel|yyyy-MM-dd, with
    |datasetConfig.type when there is one (the tag without its channel suffix; the day of submission)."""
    parts = [dataset, tag, requested_by, channel, day.isoformat(), *([dataset_type] if dataset_type else [])]
    return hashlib.md5("|".join(parts).encode("utf-8"), usedforsecurity=False).hexdigest().upper()


def stored_tag(tag: str, channel: str) -> str:
    """The tag as job_request holds it, `<tag>:<channel>`; raises Rejected for one that cannot be there."""
    if not _printable(tag) or not _printable(channel):
        raise Rejected(CLIENT_ERROR, "tag and X-Channel-ID may not hold control characters")
    if len(tag) + 1 + len(channel) > MAX_TAG:
        raise Rejected(CLIENT_ERROR, f"tag is longer than {MAX_TAG} characters with its channel")
    return f"{tag}:{channel}"


def checked_id(text: str) -> str:
    """A requestId to look up; raises Rejected for one no job can have."""
    if not _printable(text) or len(text) > 50:
        raise Rejected(CLIENT_ERROR, "requestId is at most 50 printable characters")
    return text


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def envelope(api_id: str, code: str = OK, *, result: dict | None = None, msgid: str | None = None,
             errmsg: str | None = None) -> dict:
    """The platform's response, null fields left out; `err` is the response code of a failure."""
    now = datetime.now(UTC)
    failed = code != OK or errmsg is not None
    return _without_nulls({
        "id": api_id, "ver": "1.0", "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+00:00",
        "params": {"resmsgid": str(uuid.uuid4()), "msgid": msgid, "status": "failed" if failed else "successful",
                   "err": code if code != OK else None, "errmsg": errmsg},
        "responseCode": code, "result": result})


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def job_result(row: dict, *, download_urls: list[str] | None = None, expires_at: datetime | None = None) -> dict:
    """A job_request row as the API shows a job (times in epoch milliseconds); never its encryption key.
    `download_urls`: the row's locations signed now, with their `expires_at`."""
    moments = [row["dt_job_submitted"], row["dt_job_completed"], row["dt_file_created"]]
    return _without_nulls({
        "requestId": row["request_id"], "tag": row["tag"], "dataset": row["job_id"],
        "requestedBy": row["requested_by"], "requestedChannel": row["requested_channel"], "status": row["status"],
        "lastUpdated": _millis(max((m for m in moments if m), default=None)), "datasetConfig": row["request_data"],
        "attempts": row["iteration"] or 0,
        "jobStats": {"dtJobSubmitted": _millis(row["dt_job_submitted"]),
                     "dtJobCompleted": _millis(row["dt_job_completed"]), "executionTime": row["execution_time"]},
        "downloadUrls": download_urls, "expiresAt": _millis(expires_at.replace(tzinfo=None)) if expires_at else None,
        "statusMessage": row["err_message"]})


def _printable(text: str) -> bool:
    return all(" " <= ch != "\x7f" for ch in text)


def submission(body, *, channel: str, user_id: str, key_required: bool, today: date) -> JobRequest:
    """The job_request row a submit body asks for; raises Rejected (in the platform's order: tag, dataset,
    datasetConfig; then ours)."""
    request = body.get("request") if isinstance(body, dict) else None
    if not isinstance(request, dict):
        raise Rejected(CLIENT_ERROR, "request must be an object")
    tag, dataset, config = request.get("tag"), request.get("dataset"), request.get("datasetConfig")
    if not isinstance(tag, str) or not tag.strip():
        raise Rejected(CLIENT_ERROR, "tag is empty")
    if not isinstance(dataset, str) or not dataset.strip():
        raise Rejected(CLIENT_ERROR, "dataset is empty")
    if not isinstance(config, dict) or not config:
        raise Rejected(CLIENT_ERROR, "datasetConfig is empty")
    if dataset != JOB_ID:
        raise Rejected(CLIENT_ERROR, f"dataset is not one this service produces (only {JOB_ID})")
    tag_with_channel = stored_tag(tag, channel)
    requested_by = request.get("requestedBy")
    if requested_by not in (None, "", user_id):
        raise Rejected(FORBIDDEN, "requestedBy is not the token's user")
    key = request.get("encryptionKey")
    if key in (None, ""):
        if key_required:
            raise Rejected(CLIENT_ERROR, "encryptionKey is required for this report")
        key = None
    elif not isinstance(key, str) or len(key) > MAX_KEY or not key.isascii() or not _printable(key):
        raise Rejected(CLIENT_ERROR, f"encryptionKey must be at most {MAX_KEY} printable ASCII characters")
    try:
        filters.parse_request(config)
    except filters.RequestError as error:
        raise Rejected(CLIENT_ERROR, str(error)) from None
    dataset_type = config.get("type") if isinstance(config.get("type"), str) else None
    rid = request_id(dataset, tag, user_id, channel, today, dataset_type)
    return JobRequest(tag=tag_with_channel, request_id=rid, request_data=config, requested_by=user_id,
                      requested_channel=channel, encryption_key=key)
