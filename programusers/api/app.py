"""The request API as an ASGI app (Starlette): `POST /request/submit`, `GET /request/read/{tag}`,
`GET /request/list/{tag}` (also under the gateway's `/dataset/v1`), `/health` and `/openapi.json`.

Every route verifies the user token itself (tokens.py) and answers in the platform's envelope
(contract.py). Jobs are job_request rows, written through the same RequestStore as `programusers submit`
and produced by the exhaust unchanged. Links are signed at read time and audited before they leave.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from programusers.api import contract, openapi
from programusers.api.audit import LinkAudit, LinkHandout
from programusers.api.contract import CLIENT_ERROR, FORBIDDEN, SERVER_ERROR, TOO_LARGE, UNAUTHORIZED, Rejected
from programusers.api.tokens import Caller, InvalidToken, TokenVerifier
from programusers.io import postgres
from programusers.model_config import ReportConfig
from programusers.report.job_request import SUCCESS
from programusers.report.request_store import RequestStore
from programusers.report.store import UNAVAILABLE, ReportStore, StoreEndpoints, StoreMissing, StoreRefused, signed_link

_LOG = logging.getLogger(__name__)
_ACCESS = logging.getLogger("programusers.api.access")
MAX_BODY = 1 << 20  # 1 MiB
MAX_LIST = 1000
ADMIN_ROLES = ("ORG_ADMIN", "REPORT_ADMIN")  # see every job of their channel
TOKEN, USER, CHANNEL = "x-authenticated-user-token", "x-authenticated-userid", "x-channel-id"


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What the API needs: its token keys, the job_request table, the audit, the model config (roles that
    submit, whether a key is required) and how links are signed (store settings, expiry)."""
    verifier: TokenVerifier
    requests: RequestStore
    audit: LinkAudit
    config: ReportConfig
    store: ReportStore | None = None  # checked by /health when it is an object store
    link_expiry: timedelta = timedelta(minutes=30)
    endpoints: StoreEndpoints = StoreEndpoints()


def _respond(api_id: str, code: str = contract.OK, *, result=None, msgid=None, errmsg=None) -> JSONResponse:
    return JSONResponse(contract.envelope(api_id, code, result=result, msgid=msgid, errmsg=errmsg),
                        status_code=contract.HTTP_STATUS[code])


def _caller(settings: ApiSettings, request: Request) -> tuple[Caller, str]:
    """The verified caller and its channel; raises Rejected (401, 403)."""
    try:
        caller = settings.verifier.verify(request.headers.get(TOKEN))
    except InvalidToken as error:
        raise Rejected(UNAUTHORIZED, str(error)) from None
    claimed = request.headers.get(USER)
    if claimed and claimed != caller.user_id:
        raise Rejected(FORBIDDEN, "X-Authenticated-Userid is not the token's user")
    channel = request.headers.get(CHANNEL)
    if not channel:
        raise Rejected(FORBIDDEN, "X-Channel-ID is missing in request header")
    return caller, channel


async def _json_body(request: Request):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise Rejected(TOO_LARGE, "the request body is over 1 MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Rejected(TOO_LARGE, "the request body is over 1 MiB")
    try:
        return json.loads(body)
    except ValueError:
        raise Rejected(CLIENT_ERROR, "the request body is not JSON") from None


def _signed(settings: ApiSettings, rows: list[dict], caller: Caller, channel: str, client: str | None) -> list[dict]:
    """The jobs of `rows`, each finished one with its locations signed now; every link is audited first."""
    now = datetime.now(UTC)
    expires = now + settings.link_expiry
    jobs, handouts = [], []
    for row in rows:
        if row["status"] != SUCCESS or not row["download_urls"]:
            jobs.append(contract.job_result(row))
            continue
        links = [signed_link(location, settings.config, expires_in=settings.link_expiry, endpoints=settings.endpoints)
                 for location in row["download_urls"]]
        jobs.append(contract.job_result(row, download_urls=links, expires_at=expires))
        handouts.append(LinkHandout(now, caller.user_id, row["request_id"], row["tag"], channel, client, expires))
    settings.audit.record(handouts)
    return jobs


def _visible(row: dict | None, caller: Caller, channel: str) -> bool:
    """Whether the caller may see a job: its own, or any of the channel's for an admin there."""
    return row is not None and (row["requested_by"] == caller.user_id or caller.has_role(ADMIN_ROLES, channel))


def _handler(api_id: str, work):
    """An endpoint answering in the envelope: Rejected as its code, a store outage as 500, and anything
    else as a 500 that says nothing of it (logged by type only: its text may hold a value)."""
    async def endpoint(request: Request) -> JSONResponse:
        settings: ApiSettings = request.app.state.settings
        try:
            caller, channel = _caller(settings, request)
            return await work(settings, request, caller, channel)
        except Rejected as rejected:
            return _respond(api_id, rejected.code, errmsg=rejected.message)
        except (psycopg2.Error, *UNAVAILABLE):
            _LOG.error("%s: a store is unavailable", api_id)
            return _respond(api_id, SERVER_ERROR, errmsg="a store the service needs is unavailable; try again")
        except Exception as error:
            _LOG.error("%s failed (%s)", api_id, type(error).__name__)
            return _respond(api_id, SERVER_ERROR, errmsg="the request could not be served")
    return endpoint


async def _submit(settings: ApiSettings, request: Request, caller: Caller, channel: str) -> JSONResponse:
    if not caller.has_role(settings.config.authorized_roles, channel):
        raise Rejected(FORBIDDEN, "the caller has no role in this channel that may request this report")
    body = await _json_body(request)
    msgid = body.get("params", {}).get("msgid") if isinstance(body, dict) and isinstance(body.get("params"), dict) \
        else None
    job = contract.submission(body, channel=channel, user_id=caller.user_id,
                              key_required=settings.config.requires_encryption_key, today=datetime.now(UTC).date())
    row, _ = await run_in_threadpool(settings.requests.submit, job)
    return _respond(contract.SUBMIT, result=contract.job_result(row), msgid=msgid)


async def _read(settings: ApiSettings, request: Request, caller: Caller, channel: str) -> JSONResponse:
    request_id = request.query_params.get("requestId")
    if not request_id:
        raise Rejected(CLIENT_ERROR, "requestId is missing")
    tag, request_id = contract.stored_tag(request.path_params["tag"], channel), contract.checked_id(request_id)
    row = await run_in_threadpool(settings.requests.job, tag, request_id)
    if not _visible(row, caller, channel):  # another user's job reads as no job at all
        return _respond(contract.READ, errmsg=contract.NO_JOB)
    client = request.client.host if request.client else None
    (job,) = await run_in_threadpool(_signed, settings, [row], caller, channel, client)
    return _respond(contract.READ, result=job)


async def _list(settings: ApiSettings, request: Request, caller: Caller, channel: str) -> JSONResponse:
    text = request.query_params.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST:
        raise Rejected(CLIENT_ERROR, f"limit must be a whole number from 1 to {MAX_LIST}")
    tag = contract.stored_tag(request.path_params["tag"], channel)
    requested_by = None if caller.has_role(ADMIN_ROLES, channel) else caller.user_id
    rows = await run_in_threadpool(settings.requests.jobs, tag, requested_by, int(text))
    client = request.client.host if request.client else None
    jobs = await run_in_threadpool(_signed, settings, rows, caller, channel, client)
    return _respond(contract.LIST, result={"count": len(jobs), "jobs": jobs})


def _check_stores(settings: ApiSettings) -> dict[str, str]:
    checks = {}
    try:
        with postgres.session(settings.requests.dsn) as connection:
            postgres.query(connection, "SELECT 1")
        checks["postgres"] = "ok"
    except psycopg2.Error:
        checks["postgres"] = "unavailable"
    if settings.store is not None and settings.store.account is not None:
        try:
            settings.store.check()
            checks["store"] = "ok"
        except (*UNAVAILABLE, StoreRefused, StoreMissing):
            checks["store"] = "unavailable"
    return checks


async def _health(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(_check_stores, request.app.state.settings)
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse({"healthy": healthy, "checks": checks}, status_code=200 if healthy else 503)


async def _openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi.DOCUMENT)


class AccessLog:
    """One JSON line per request: method, path, status, milliseconds, client address. Never a header (the
    token) nor a body (the key)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            _ACCESS.info(json.dumps({"method": scope["method"], "path": scope["path"], "status": status.get("code"),
                                     "ms": round((time.perf_counter() - started) * 1000, 1),
                                     "client": client[0] if client else None}))


def _routes(prefix: str) -> list[Route]:
    return [Route(f"{prefix}/request/submit", _handler(contract.SUBMIT, _submit), methods=["POST"]),
            Route(f"{prefix}/request/read/{{tag}}", _handler(contract.READ, _read), methods=["GET"]),
            Route(f"{prefix}/request/list/{{tag}}", _handler(contract.LIST, _list), methods=["GET"])]


async def _no_route(request: Request, error) -> JSONResponse:
    """A path or method that is no route (a tag holding `/` is one): the envelope, not a bare text."""
    return _respond("ekstep.analytics.dataset.request", contract.NOT_FOUND,
                    errmsg="no such route: see /openapi.json")


def create_app(settings: ApiSettings):
    app = Starlette(routes=[*_routes(""), *_routes("/dataset/v1"), Route("/health", _health),
                            Route("/openapi.json", _openapi)], exception_handlers={404: _no_route, 405: _no_route})
    app.state.settings = settings
    return AccessLog(app)

