"""Reports on the platform's object store (SPEC §6), against the stack's real Azure Blob service (Azurite):
the exhaust writes its sealed shards and its report there through Beam's filesystem, publishes only whole
reports, leaves nothing else behind, and hands reports out as read-only links that expire."""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from exhaust_cases import (
    SALT,
    blob_names,
    clear_text_pii,
    d_ana_report,
    enrollment,
    exhaust_in_process,
    flags,
    link,
    refused,
    status_rows,
    submit_district,
    unzipped,
)

from programusers import cli
from programusers.local import azurite
from programusers.report.job_request import JOB_ID, JobRequest, tag_for
from programusers.report.request_store import RequestStore

pytestmark = pytest.mark.services
ACCOUNT = azurite.DEVELOPMENT_ACCOUNT


def store_flags(container, endpoint=azurite.ENDPOINT):
    return ["--store", "azure", "--container", container, "--azure-blob-endpoint", endpoint]


def http_get(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.status, answer.read()


def test_a_report_on_azure_is_the_local_report_and_its_link_opens_read_only_then_expires(
        scenario, pg_dsn, table, azure_container, tmp_path, staged):
    local_id, azure_id = (submit_district(pg_dsn, table, scenario, by=by) for by in ("manager-1", "manager-2"))

    code, _ = exhaust_in_process(scenario, "--job-request-table", table, "--request-id", local_id,
                                 "--output", str(tmp_path / "local"))
    assert code == 0
    staging = f"azfs://{azurite.ACCOUNT}/{azure_container}/staging"
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, "--request-id", azure_id,
                                    *store_flags(azure_container), "--staging", staging)
    assert code == 0, logs[-5:]

    row = status_rows(pg_dsn, table, azure_id)
    (location,) = row["download_urls"]
    assert row["status"] == "SUCCESS" and re.fullmatch(
        rf"azfs://{azurite.ACCOUNT}/{azure_container}/ml_reports/{JOB_ID}/{azure_id}_\d{{8}}\.zip", location)
    # The only object the request leaves is its report.
    assert blob_names(azure_container) == [location.split(f"/{azure_container}/", 1)[1]]
    # No decrypted PII rested in staging, in the shards or anywhere else.
    assert any("/shard-" in path for path, _ in staged) and any(path.startswith(staging) for path, _ in staged)
    assert clear_text_pii(staged, scenario) == []

    url = link(table, azure_id, "--expires", "20s")
    assert url.startswith(azurite.ENDPOINT) and parse_qs(urlsplit(url).query)["sp"] == ["r"]
    status, body = http_get(url)
    report = tmp_path / location.rsplit("/", 1)[1]
    report.write_bytes(body)
    local = status_rows(pg_dsn, table, local_id)["download_urls"][0]
    assert status == 200 and unzipped(report, "k-district") == unzipped(local, "k-district") == d_ana_report(scenario)
    # The link reads, and nothing else: not a write, not the container's listing, not with its rights widened.
    assert refused(url, "PUT") == 403
    query = parse_qs(urlsplit(url).query)
    widened = urlunsplit(urlsplit(url)._replace(query=urlencode({**query, "sp": "rw"}, doseq=True)))
    assert refused(widened) == 403
    assert refused(f"{azurite.ENDPOINT}/{azure_container}?restype=container&comp=list&{urlsplit(url).query}") == 403
    expiry = datetime.fromisoformat(parse_qs(urlsplit(url).query)["se"][0].replace("Z", "+00:00"))
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 2)
    assert refused(url) == 403  # expired


def test_status_shows_the_store_location_never_a_signed_link(scenario, pg_dsn, table, azure_container, capsys):
    request_id = submit_district(pg_dsn, table, scenario)
    assert exhaust_in_process(scenario, "--job-request-table", table, *store_flags(azure_container))[0] == 0
    capsys.readouterr()
    assert cli.main(["status", request_id, "--job-request-table", table]) == 0
    shown = capsys.readouterr().out
    assert f"azfs://{azurite.ACCOUNT}/{azure_container}/" in shown and "sig=" not in shown and "?" not in shown


def test_a_killed_exhaust_leaves_no_partial_report_and_the_next_run_removes_what_it_staged(
        scenario, pg_dsn, table, azure_container, tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    staging = f"azfs://{azurite.ACCOUNT}/{azure_container}/staging"
    run = subprocess.Popen(
        [sys.executable, "-m", "programusers", "exhaust", "--runner", "DirectRunner", *store_flags(azure_container),
         "--staging", staging, *flags(scenario, table)],
        env={**os.environ, "SUNBIRD_ENCRYPTION_KEY": SALT}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    # Killed once the pipeline has staged something: its shards or its progress.
    while not [name for name in blob_names(azure_container) if name.startswith("staging/")]:
        assert run.poll() is None and time.monotonic() < deadline, "the exhaust ended before it could be killed"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert [name for name in blob_names(azure_container) if not name.startswith("staging/")] == []  # no report, whole or not

    code, logs = exhaust_in_process(scenario, "--job-request-table", table, *store_flags(azure_container),
                                    "--staging", staging)
    row = status_rows(pg_dsn, table, request_id)
    assert code == 0 and (row["status"], row["iteration"]) == ("SUCCESS", 1)
    assert blob_names(azure_container) == [row["download_urls"][0].split(f"/{azure_container}/", 1)[1]]
    assert any("removed the staging of 1 report(s) whose exhaust died" in line for line in logs)


@pytest.mark.parametrize("request_id", ["../../escaped", "a/b", "%2e%2e", "x" * 51])
def test_a_request_id_that_could_leave_the_reports_prefix_is_refused(
        request_id, scenario, pg_dsn, table, azure_container):
    hostile = JobRequest(tag=tag_for(scenario.a.id, "../../../" + azure_container), request_id=request_id[:50],
                         request_data=enrollment(program=scenario.a), requested_by="m", encryption_key="k")
    RequestStore(pg_dsn, table).insert(hostile)
    assert exhaust_in_process(scenario, "--job-request-table", table, *store_flags(azure_container))[0] == 0
    row = status_rows(pg_dsn, table, hostile.request_id)
    if request_id == "x" * 51:  # cut to 50 by the column: a plain id, produced as usual
        assert row["status"] == "SUCCESS"
        assert blob_names(azure_container) == [row["download_urls"][0].split(f"/{azure_container}/", 1)[1]]
        assert blob_names(azure_container)[0].startswith(f"ml_reports/{JOB_ID}/")
        return
    assert (row["status"], row["err_message"]) == ("FAILED", "request_id may hold only letters, digits, '_' and '-'")
    assert blob_names(azure_container) == []
