"""The request API (SPEC §6) served by a real uvicorn on a loopback port, called with a plain HTTP client:
the platform's contract (routes, envelope, ids, dedup, resubmit) and every refusal, tried as an attacker
would (forged, expired and unsigned tokens, other users, other channels, no role, hostile input)."""
import contextlib
import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from api_client import STRANGER, call, hs256_with_the_public_key, serve, token, unsigned_token
from exhaust_cases import enrollment

from programusers import cli, schema
from programusers.api.app import ApiSettings
from programusers.api.audit import LinkAudit
from programusers.api.contract import request_id
from programusers.api.tokens import TokenVerifier
from programusers.io import postgres
from programusers.model_config import default_model_config
from programusers.report.request_store import RequestStore

pytestmark = pytest.mark.services
DATASET = "program-user-exhaust"


@pytest.fixture(scope="module")
def api_tables(pg_dsn):
    unique = uuid.uuid4().hex[:8]
    table, audit = f"api_job_request_{unique}", f"api_link_audit_{unique}"
    connection = postgres.connect(pg_dsn)
    schema.init_postgres(connection, table, audit)
    yield table, audit
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"DROP TABLE IF EXISTS {audit}")
    connection.close()


@pytest.fixture(scope="module")
def api(pg_dsn, api_tables, keys_dir):
    table, audit = api_tables
    settings = ApiSettings(verifier=TokenVerifier(keys_dir), requests=RequestStore(pg_dsn, table),
                           audit=LinkAudit(pg_dsn, audit), config=default_model_config())
    server, thread, url = serve(settings)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


def submit_body(program="p-1", *, tag="tag-1", key="Zip-Pass-1", msgid="m-1", **request):
    return {"id": "ekstep.analytics.dataset.request.submit", "ver": "1.0", "params": {"msgid": msgid},
            "request": {"tag": tag, "dataset": DATASET, "requestedBy": "u-manager",
                        "datasetConfig": {"type": DATASET, "params": enrollment(program=_Program(program)),
                                          "title": "Program users"},
                        "encryptionKey": key, "output_format": "csv", **request}}


class _Program:
    def __init__(self, id_):
        self.id = id_


def submit(api, body=None, **kwargs):
    return call(f"{api}/request/submit", "POST", body or submit_body(), user_token=kwargs.pop("user_token", token()),
                **kwargs)


TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def test_submit_answers_in_the_platforms_envelope_with_its_request_id(api):
    program = f"p-{uuid.uuid4().hex[:8]}"
    status, answer = submit(api, submit_body(program, tag=program))
    assert status == 200, answer
    assert answer["id"] == "ekstep.analytics.dataset.request.submit" and answer["ver"] == "1.0"
    assert TS.fullmatch(answer["ts"]) and answer["responseCode"] == "OK"
    assert answer["params"]["status"] == "successful" and answer["params"]["msgid"] == "m-1"
    assert uuid.UUID(answer["params"]["resmsgid"]) and "err" not in answer["params"] and "errmsg" not in answer["params"]
    job = answer["result"]
    expected_id = request_id(DATASET, program, "u-manager", "ch-1", datetime.now(UTC).date(), DATASET)
    assert job["requestId"] == expected_id
    assert (job["tag"], job["dataset"], job["requestedBy"], job["requestedChannel"], job["status"], job["attempts"]) \
        == (f"{program}:ch-1", DATASET, "u-manager", "ch-1", "SUBMITTED", 0)
    assert job["datasetConfig"]["title"] == "Program users" and "downloadUrls" not in job
    assert isinstance(job["jobStats"]["dtJobSubmitted"], int) and "dtJobCompleted" not in job["jobStats"]
    assert "Zip-Pass-1" not in json.dumps(answer) and "encryption" not in json.dumps(answer).lower()


def test_the_request_id_is_the_platforms_md5():
    text = "program-user-exhaust|tag-1|u-1|ch-1|2026-12-06|program-user-exhaust"
    assert request_id(DATASET, "tag-1", "u-1", "ch-1", date(2026, 12, 6), DATASET) == \
        hashlib.md5(text.encode()).hexdigest().upper()
    assert request_id(DATASET, "tag-1", "u-1", "ch-1", date(2026, 12, 6), None) == \
        hashlib.md5(text.rsplit("|", 1)[0].encode()).hexdigest().upper()


def test_a_second_submit_returns_the_job_unchanged_and_a_failed_one_goes_back_to_submitted(api, pg_dsn, api_tables):
    program = f"p-{uuid.uuid4().hex[:8]}"
    first = submit(api, submit_body(program, tag=program))[1]["result"]
    again = submit(api, submit_body(program, tag=program))[1]["result"]
    assert again["requestId"] == first["requestId"] and again["jobStats"] == first["jobStats"]
    with postgres.session(pg_dsn) as connection:  # the exhaust failed it twice
        postgres.query(connection, f"UPDATE {api_tables[0]} SET status = 'FAILED', iteration = 2, "
                                   "err_message = 'No Data Found' WHERE request_id = %s", (first["requestId"],))
    time.sleep(0.01)
    status, answer = submit(api, submit_body(program, tag=program))
    job = answer["result"]
    assert status == 200 and (job["status"], job["attempts"]) == ("SUBMITTED", 2)
    assert job["jobStats"]["dtJobSubmitted"] > first["jobStats"]["dtJobSubmitted"]


def test_read_and_list_show_the_callers_jobs_of_the_channel(api):
    program = f"p-{uuid.uuid4().hex[:8]}"
    mine = submit(api, submit_body(program, tag=program))[1]["result"]["requestId"]
    theirs_token = token("u-other")
    theirs = submit(api, submit_body(program, tag=program, requestedBy=None), user_token=theirs_token)[1][
        "result"]["requestId"]
    assert mine != theirs
    status, answer = call(f"{api}/request/read/{program}?requestId={mine}", user_token=token())
    assert status == 200 and answer["id"] == "ekstep.analytics.dataset.request.info"
    assert answer["result"]["requestId"] == mine
    # Another user's job reads exactly as one that does not exist.
    for request in (theirs, "0" * 32):
        status, answer = call(f"{api}/request/read/{program}?requestId={request}", user_token=token())
        assert (status, answer["params"]["status"], answer["params"]["errmsg"], answer["responseCode"]) == (
            200, "failed", "no job available with the given request_id and tag", "OK")
        assert "result" not in answer
    status, answer = call(f"{api}/request/list/{program}", user_token=token())
    assert status == 200 and answer["id"] == "ekstep.analytics.dataset.request.list"
    assert answer["result"]["count"] == 1 and [j["requestId"] for j in answer["result"]["jobs"]] == [mine]
    # An admin of the channel sees both; of another channel, neither.
    admin = token("u-admin", roles=(("REPORT_ADMIN", "ch-1"),))
    assert {j["requestId"] for j in call(f"{api}/request/list/{program}", user_token=admin)[1]["result"]["jobs"]} \
        == {mine, theirs}
    elsewhere = token("u-admin", roles=(("ORG_ADMIN", "ch-2"),))
    assert call(f"{api}/request/list/{program}", user_token=elsewhere)[1]["result"]["count"] == 0
    # The same tag in another channel is another job.
    assert call(f"{api}/request/read/{program}?requestId={mine}", user_token=token(), channel="ch-2")[1][
        "params"]["errmsg"] == "no job available with the given request_id and tag"
    assert call(f"{api}/request/list/{program}?limit=0", user_token=token())[0] == 400


@pytest.mark.parametrize("forged,reason", [
    (None, "the user token is missing"),
    ("not-a-jwt", "the user token is malformed"),
    (unsigned_token(), "the user token is not signed with RS256"),
    (hs256_with_the_public_key(), "the user token is not signed with RS256"),
    (token(expires_in=-30), "the user token has expired"),
    (token(expires_in=None), "the user token is invalid"),
    (token(nbf=int(time.time()) + 3600), "the user token is not valid yet"),
    (token(key=STRANGER), "the user token's signature does not verify"),
    (token(key=STRANGER, kid=None), "the user token's signature does not verify"),
    (token(kid="k-unknown"), "the user token is signed with an unknown key"),
])
def test_a_bad_token_is_refused_on_every_route(api, forged, reason):
    for method, route in (("POST", "/request/submit"), ("GET", "/request/read/t?requestId=R"),
                          ("GET", "/request/list/t"), ("GET", "/dataset/v1/request/list/t")):
        status, answer = call(f"{api}{route}", method, submit_body() if method == "POST" else None,
                              user_token=forged)
        assert (status, answer["responseCode"], answer["params"]["errmsg"]) == (401, "UNAUTHORIZED", reason), route


def test_a_token_without_a_kid_is_tried_against_each_key(api):
    assert submit(api, submit_body(f"p-{uuid.uuid4().hex[:6]}"), user_token=token(kid=None))[0] == 200


@pytest.mark.parametrize("case,code,message", [
    ("another user's id", 403, "X-Authenticated-Userid is not the token's user"),
    ("no channel", 403, "X-Channel-ID is missing in request header"),
    ("no role", 403, "the caller has no role in this channel that may request this report"),
    ("role of another org", 403, "the caller has no role in this channel that may request this report"),
    ("a role that may not submit", 403, "the caller has no role in this channel that may request this report"),
    ("requested for another user", 403, "requestedBy is not the token's user"),
])
def test_who_may_submit(api, case, code, message):
    kwargs = {"user_token": token()}
    body = submit_body(f"p-{uuid.uuid4().hex[:6]}")
    if case == "another user's id":
        kwargs["user"] = "u-someone-else"
    elif case == "no channel":
        kwargs["channel"] = None
    elif case == "no role":
        kwargs["user_token"] = token(roles=())
    elif case == "role of another org":
        kwargs["user_token"] = token(roles=(("PROGRAM_MANAGER", "ch-2"),))
    elif case == "a role that may not submit":
        kwargs["user_token"] = token(roles=(("PUBLIC", "ch-1"),))
    else:
        body["request"]["requestedBy"] = "u-someone-else"
    status, answer = submit(api, body, **kwargs)
    assert (status, answer["responseCode"], answer["params"]["errmsg"]) == (code, "FORBIDDEN", message)


def _without(field):
    body = submit_body()
    del body["request"][field]
    return body


@pytest.mark.parametrize("body,message", [
    ({"request": {}}, "tag is empty"),
    ({"request": {"tag": "t", "datasetConfig": {}}}, "dataset is empty"),
    ({"request": {"tag": "", "dataset": ""}}, "tag is empty"),
    (_without("datasetConfig"), "datasetConfig is empty"),
    (submit_body(dataset="progress-exhaust"), "dataset is not one this service produces (only program-user-exhaust)"),
    (_without("encryptionKey"), "encryptionKey is required for this report"),
    (submit_body(key="k" * 51), "encryptionKey must be at most 50 printable ASCII characters"),
    (submit_body(key="pass\nword"), "encryptionKey must be at most 50 printable ASCII characters"),
    (submit_body(datasetConfig={"params": {"filters": []}}), "exactly one program_enrollment.program_id '=' "
                                                             "filter is required, found 0"),
    ({"request": "not an object"}, "request must be an object"),
    ([1, 2], "request must be an object"),
])
def test_invalid_submissions_get_400_in_the_platforms_order(api, body, message):
    status, answer = submit(api, body)
    assert (status, answer["responseCode"], answer["params"]["errmsg"]) == (400, "CLIENT_ERROR", message)


@pytest.mark.parametrize("tag", ["it's \"quoted\"", "../../etc/passwd", "a\x00b", "/var/lib/x", "t" * 10_000,
                                 "x'; DROP TABLE job_request; --", "%2e%2e%2f"])
def test_hostile_tags_get_a_clear_400_or_no_job_never_a_500(api, tag):
    status, answer = submit(api, submit_body(tag=tag))
    assert status in (200, 400) and answer["responseCode"] in ("OK", "CLIENT_ERROR"), answer
    quoted = urllib.request.quote(tag, safe="")
    for route in (f"/request/read/{quoted}?requestId={urllib.request.quote(tag, safe='')}",
                  f"/request/list/{quoted}"):
        status, answer = call(f"{api}{route}", user_token=token())
        # A tag holding '/' names no route (404, in the envelope); any other is a clear answer.
        expected = {(404, "RESOURCE_NOT_FOUND")} if "/" in tag else {(200, "OK"), (400, "CLIENT_ERROR")}
        assert (status, answer["responseCode"]) in expected, (route, answer)
        for job in answer.get("result", {}).get("jobs", []):  # a legitimate, if odd, tag: its own job only
            assert job["tag"] == f"{tag}:ch-1"


def post_raw(api, headers: dict, chunks) -> tuple[int, dict]:
    """A POST whose body the server may refuse before it is all sent (then the pipe breaks on our side,
    and its answer is read all the same)."""
    url = urlsplit(api)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", "/request/submit")
    for name, value in {"x-authenticated-user-token": token(), "X-Channel-ID": "ch-1", **headers}.items():
        connection.putheader(name, value)
    connection.endheaders()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for chunk in chunks:
            connection.send(chunk)
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())


def test_bodies_too_large_or_not_json_are_refused(api):
    # Refused on the length it declares, before it is read; and, sent in chunks, once it passes 1 MiB.
    status, answer = post_raw(api, {"Content-Length": str((1 << 20) + 1)}, [b"{"])
    assert (status, answer["responseCode"]) == (413, "REQUEST_TOO_LARGE")
    piece = b" " * 65536
    chunked = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 17 + [b"0\r\n\r\n"]
    status, answer = post_raw(api, {"Transfer-Encoding": "chunked"}, chunked)
    assert (status, answer["params"]["errmsg"]) == (413, "the request body is over 1 MiB")
    status, answer = submit(api, raw=b"{not json")
    assert (status, answer["params"]["errmsg"]) == (400, "the request body is not JSON")


def test_a_finished_jobs_link_is_signed_at_read_and_audited_without_the_link(api, pg_dsn, api_tables, capsys):
    table, audit = api_tables
    program = f"p-{uuid.uuid4().hex[:8]}"
    request = submit(api, submit_body(program, tag=program))[1]["result"]["requestId"]
    location = f"ml_reports/program-user-exhaust/{request}_20261206.zip"
    with postgres.session(pg_dsn) as connection:  # as the exhaust leaves a local report
        postgres.query(connection, f"UPDATE {table} SET status = 'SUCCESS', download_urls = %s, "
                                   "dt_job_completed = now(), execution_time = 1200 WHERE request_id = %s",
                       ([location], request))
    before = datetime.now(UTC)
    answer = call(f"{api}/request/read/{program}?requestId={request}", user_token=token())[1]["result"]
    assert answer["downloadUrls"] == [location] and answer["jobStats"]["executionTime"] == 1200
    expires = datetime.fromtimestamp(answer["expiresAt"] / 1000, UTC)
    assert timedelta(minutes=29) < expires - before < timedelta(minutes=31)
    call(f"{api}/request/list/{program}", user_token=token())
    rows = LinkAudit(pg_dsn, audit).entries(request_id=request)
    assert len(rows) == 2 and {r["user_id"] for r in rows} == {"u-manager"}
    assert {(r["tag"], r["channel"], r["client_address"]) for r in rows} == {(f"{program}:ch-1", "ch-1", "127.0.0.1")}
    assert all(abs((r["expires_at"] - expires).total_seconds()) < 60 for r in rows)
    capsys.readouterr()
    assert cli.main(["audit", "--request-id", request, "--audit-table", audit]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(listed) == 2 and all(entry["request_id"] == request for entry in listed)
    assert location not in json.dumps(listed) and "Zip-Pass-1" not in json.dumps(listed)


def test_health_and_the_openapi_document(api):
    with urllib.request.urlopen(f"{api}/health", timeout=30) as answer:
        assert json.loads(answer.read()) == {"healthy": True, "checks": {"postgres": "ok"}}
    with urllib.request.urlopen(f"{api}/openapi.json", timeout=30) as answer:
        document = json.loads(answer.read())
    assert {"/request/submit", "/request/read/{tag}", "/request/list/{tag}"} <= set(document["paths"])


def test_the_access_log_holds_no_token_key_or_body(api, caplog):
    secret_key = "Zip-Pass-Never-Logged"
    user_token = token()
    tag = f"log-{uuid.uuid4().hex[:8]}"
    with caplog.at_level("INFO", logger="programusers.api.access"):
        submit(api, submit_body(f"p-{uuid.uuid4().hex[:6]}", key=secret_key), user_token=user_token)
        call(f"{api}/request/list/{tag}", user_token=user_token)
        # The server logs a request once its answer is sent: the last line may come a moment after it.
        deadline = time.monotonic() + 10
        while f"/request/list/{tag}" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [record.getMessage() for record in caplog.records if record.name == "programusers.api.access"]
    entries = [json.loads(line) for line in lines]
    assert [(e["method"], e["path"], e["status"]) for e in entries if e["path"] in (
        "/request/submit", f"/request/list/{tag}")] == [("POST", "/request/submit", 200),
                                                         ("GET", f"/request/list/{tag}", 200)]
    assert all(e["client"] == "127.0.0.1" and e["ms"] >= 0 for e in entries)
    assert not [line for line in lines if user_token in line or secret_key in line or "u-manager" in line]


def test_with_an_issuer_set_a_token_from_another_issuer_is_refused(pg_dsn, api_tables, keys_dir):
    issuer = "https://keycloak.example/auth/realms/sunbird"
    table, audit = api_tables
    settings = ApiSettings(verifier=TokenVerifier(keys_dir, issuer), requests=RequestStore(pg_dsn, table),
                           audit=LinkAudit(pg_dsn, audit), config=default_model_config())
    server, thread, url = serve(settings)
    try:
        for claims, expected in (({"iss": issuer}, 200), ({"iss": "https://elsewhere.example"}, 401), ({}, 401)):
            status, answer = call(f"{url}/request/list/t", user_token=token(**claims))
            assert status == expected, (claims, answer)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
