"""Reports on an S3 store (SPEC §6), against the stack's real S3 server (SeaweedFS): the exhaust stages its
sealed shards and publishes whole reports through Beam's s3:// filesystem, leaves nothing else behind, and
hands reports out as presigned GETs that expire."""
import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from exhaust_cases import (
    clear_text_pii,
    d_ana_report,
    exhaust_in_process,
    link,
    object_keys,
    refused,
    status_rows,
    submit_district,
    unzipped,
)

from programusers.local import seaweedfs
from programusers.report.job_request import JOB_ID

pytestmark = pytest.mark.services


def store_flags(bucket, endpoint=seaweedfs.ENDPOINT):
    return ["--store", "s3", "--container", bucket, "--s3-endpoint", endpoint]


def test_a_report_on_s3_is_the_local_report_and_its_presigned_link_expires(
        scenario, pg_dsn, table, s3_bucket, tmp_path, staged):
    request_id = submit_district(pg_dsn, table, scenario)

    staging = f"s3://{s3_bucket}/staging"
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, *store_flags(s3_bucket), "--staging", staging)
    assert code == 0, logs[-5:]
    row = status_rows(pg_dsn, table, request_id)
    (location,) = row["download_urls"]
    assert row["status"] == "SUCCESS" and re.fullmatch(
        rf"s3://{s3_bucket}/ml_reports/{JOB_ID}/{request_id}_\d{{8}}\.zip", location)
    assert object_keys(s3_bucket) == [location.split(f"/{s3_bucket}/", 1)[1]]
    assert any("/shard-" in path for path, _ in staged) and any(path.startswith(staging) for path, _ in staged)
    assert clear_text_pii(staged, scenario) == []

    url = link(table, request_id, "--expires", "20s", "--s3-endpoint", seaweedfs.ENDPOINT)
    assert url.startswith(f"{seaweedfs.ENDPOINT}/{s3_bucket}/") and "X-Amz-Signature=" in url
    report = tmp_path / location.rsplit("/", 1)[1]
    with urllib.request.urlopen(url, timeout=30) as answer:
        report.write_bytes(answer.read())
    assert unzipped(report, "k-district") == d_ana_report(scenario)
    assert refused(url, "PUT") == 403
    query = parse_qs(urlsplit(url).query)
    longer = urlunsplit(urlsplit(url)._replace(query=urlencode({**query, "X-Amz-Expires": "604800"}, doseq=True)))
    assert refused(longer) == 403  # its signature no longer matches
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expiry = signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 2)
    assert refused(url) == 403  # expired
