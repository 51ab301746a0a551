"""Reports on an S3 store (SPEC §6), against the stack's real S3 server (SeaweedFS): the exhaust stages its
sealed shards and publishes whole reports through Beam's s3:// filesystem, leaves nothing else behind, and
hands reports out as presigned GETs that expire."""
import re
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from apache_beam.io.filesystems import FileSystems
from exhaust_cases import d_ana_report, exhaust_in_process, link, refused, status_rows, submit_district, unzipped

from programusers.io import files
from programusers.local import seaweedfs
from programusers.report.job_request import JOB_ID

pytestmark = pytest.mark.services
ACCOUNT = seaweedfs.DEVELOPMENT_ACCOUNT
BEAM_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def bucket(stack, monkeypatch):
    name = f"reports-{uuid.uuid4().hex[:12]}"
    ACCOUNT.create_bucket(name)
    for variable, value in seaweedfs.environment().items():
        monkeypatch.setenv(variable, value)
    for variable in BEAM_VARIABLES:  # the exhaust exports the identity there: unset again after
        monkeypatch.setenv(variable, "")
    yield name
    client = ACCOUNT.client()
    for found in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=found["Key"])
    client.delete_bucket(Bucket=name)


def keys(bucket) -> list[str]:
    return sorted(found["Key"] for found in ACCOUNT.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def store_flags(bucket, endpoint=seaweedfs.ENDPOINT):
    return ["--store", "s3", "--container", bucket, "--s3-endpoint", endpoint]


def test_a_report_on_s3_is_the_local_report_and_its_presigned_link_expires(
        scenario, pg_dsn, table, bucket, tmp_path, monkeypatch):
    request_id = submit_district(pg_dsn, table, scenario)
    staged, remove_dir = [], files.remove_dir

    def keep_and_remove(path):
        for found in FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list:
            with FileSystems.open(found.path) as staged_file:
                staged.append((found.path, staged_file.read()))
        remove_dir(path)
    monkeypatch.setattr(files, "remove_dir", keep_and_remove)

    staging = f"s3://{bucket}/staging"
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, *store_flags(bucket), "--staging", staging)
    assert code == 0, logs[-5:]
    row = status_rows(pg_dsn, table, request_id)
    (location,) = row["download_urls"]
    assert row["status"] == "SUCCESS" and re.fullmatch(
        rf"s3://{bucket}/ml_reports/{JOB_ID}/{request_id}_\d{{8}}\.zip", location)
    assert keys(bucket) == [location.split(f"/{bucket}/", 1)[1]]
    assert any("/shard-" in path for path, _ in staged) and any(path.startswith(staging) for path, _ in staged)
    pii = [value.encode() for value in scenario.pii_strings()]
    assert not [path for path, data in staged if any(value in data for value in pii)]

    url = link(table, request_id, "--expires", "20s", "--s3-endpoint", seaweedfs.ENDPOINT)
    assert url.startswith(f"{seaweedfs.ENDPOINT}/{bucket}/") and "X-Amz-Signature=" in url
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


@pytest.mark.parametrize("case,message", [
    ("wrong secret", "the S3 store refused our credentials"),
    ("no bucket", "the bucket {bucket}-gone does not exist"),
    ("store down", "the report store (s3) is unreachable"),
])
def test_an_s3_store_that_cannot_take_the_report_fails_the_request_for_a_later_run(
        case, message, scenario, pg_dsn, table, bucket, monkeypatch):
    request_id = submit_district(pg_dsn, table, scenario)
    store = store_flags(bucket)
    if case == "wrong secret":
        monkeypatch.setenv("aws_storage_secret", "not-the-secret")
    elif case == "no bucket":
        store = store_flags(f"{bucket}-gone")
    else:  # nothing listens on port 1
        store = store_flags(bucket, endpoint="http://127.0.0.1:1")
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, *store, "--max-store-outage", "3")
    row = status_rows(pg_dsn, table, request_id)
    assert code == 0 and (row["status"], row["iteration"]) == ("FAILED", 1)
    assert row["err_message"] == message.format(bucket=bucket)
    assert keys(bucket) == []
    assert not [line for line in logs if seaweedfs.SECRET_KEY in line or "not-the-secret" in line]

