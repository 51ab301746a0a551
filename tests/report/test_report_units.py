"""The exhaust's pure parts: the shards' merge, request handling, the password zip, store settings."""
import io
import json
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch
from zoneinfo import ZoneInfo

import pytest
import pyzipper
from hypothesis import given
from hypothesis import strategies as st

from programusers.crypto import PlatformCipher
from programusers.filters import parse_request
from programusers.model_config import default_model_config
from programusers.pipelines.exhaust import ReportSources
from programusers.report import job_request, shards
from programusers.report.archive import encrypted_member, zip_password
from programusers.report.job_request import JobRequest

# --- sorted shards and their merge --------------------------------------------------------------

HEADER = ["Name", "District"]


def keyed_line(district, name):
    # The key is not the line's order: a merge by line alone would not pass.
    return [[district, name[::-1]], f"{name},{district}\r\n"]


def stage_shards(tmp_path, runs, extra=()):
    """Writes each run, sorted, as a shard in the files module's format, and a manifest naming them (not
    `extra`, the runs of attempts a runner retried)."""
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    entries = []
    for n, run in enumerate([*runs, *extra]):
        name = f"shard-{n:04d}.jsonl"
        data = "".join(json.dumps(chunk, ensure_ascii=False) + "\n" for chunk in (sorted(run)[:2], sorted(run)[2:]) if chunk).encode()
        (staging_dir / name).write_bytes(data)
        if n < len(runs):
            entries.append([name, len(run), len(data)])
    (staging_dir / shards.MANIFEST).write_text(json.dumps({"header": HEADER, "shards": entries}))
    return staging_dir


# Names of any characters: line breaks, U+2028, quotes, astral planes.
LINES = st.lists(st.builds(keyed_line, st.sampled_from(["", "A", "B", "b", "C, D"]), st.text(max_size=4)))


@given(st.lists(LINES, max_size=6), st.lists(LINES, max_size=2), st.integers(2, 4))
def test_shards_merge_into_the_sorted_report_whatever_the_runs(runs, retried, max_open):
    with tempfile.TemporaryDirectory() as tmp, patch.object(shards, "MAX_OPEN_SHARDS", max_open):
        staging_dir = stage_shards(Path(tmp), runs, retried)
        merged = Path(tmp) / "report.csv"
        rows = shards.merge_shards(str(staging_dir), str(merged), datetime(2024, 1, 1))
        every = sorted(line for run in runs for line in run)
        assert rows == len(every)
        assert merged.read_bytes().decode() == "Name,District\r\n" + "".join(line for _, line in every)


@pytest.mark.parametrize("declared,cut,error", [(3, False, "2 of 3 rows"), (1, False, "2 of 1 rows"),
                                                 (2, True, "rows from 1 unreadable")])
def test_a_shard_unlike_its_manifest_entry_fails_the_merge(tmp_path, declared, cut, error):
    staging_dir = stage_shards(tmp_path, [[keyed_line("A", "secret name"), keyed_line("B", "other name")]])
    manifest = json.loads((staging_dir / shards.MANIFEST).read_text())
    manifest["shards"][0][1] = declared
    (staging_dir / shards.MANIFEST).write_text(json.dumps(manifest))
    if cut:  # a shard cut off in the middle of its last record
        shard = staging_dir / manifest["shards"][0][0]
        shard.write_bytes(shard.read_bytes()[:-9])
    with pytest.raises(shards.IncompleteShard, match=error) as failure:
        shards.merge_shards(str(staging_dir), str(tmp_path / "report.csv"), datetime(2024, 1, 1))
    assert "name" not in str(failure.value)  # the records' text stays out of the error


def test_no_manifest_no_report(tmp_path):
    assert shards.merge_shards(str(tmp_path), str(tmp_path / "report.csv"), datetime(2024, 1, 1)) == 0
    assert not (tmp_path / "report.csv").exists()


# --- requests --------------------------------------------------------------------------------

PROGRAM = "602512d8e6aefa27d9629bc3"


def test_command_line_filters_become_the_platform_request_shape():
    data = job_request.request_data(PROGRAM, [
        ("user_locations['district_id']", "in", "d1, d2,,"),
        ("program_enrollment.updated_at", ">=", "2023-01-01"),
        ("user_consent.user_id", "=", "u1")])
    assert data == {"filters": [
        {"table_name": "program_enrollment", "table_filters": [
            {"name": "program_id", "operator": "=", "value": PROGRAM},
            {"name": "user_locations['district_id']", "operator": "in", "value": ["d1", "d2"]},
            {"name": "updated_at", "operator": ">=", "value": "2023-01-01"}]},
        {"table_name": "user_consent", "table_filters": [
            {"name": "object_id", "operator": "=", "value": PROGRAM},
            {"name": "user_id", "operator": "=", "value": "u1"}]}]}
    parsed = parse_request(data)
    assert parsed.program_id == PROGRAM and parsed.user_ids == {"u1"}


def request(request_id, data, key="k", by="admin", tag="t"):
    return JobRequest(tag=tag, request_id=request_id, request_data=data, requested_by=by, encryption_key=key)


def test_duplicates_are_equal_data_key_and_requester_whatever_the_order_or_tag():
    a = request("A", {"filters": [], "x": {"b": 1, "a": 2}})
    same = request("B", {"x": {"a": 2, "b": 1}, "filters": []}, tag="other")
    others = [request("C", a.request_data, key="k2"), request("D", a.request_data, by="someone"),
              request("E", {"filters": [1]}), request("F", None)]
    groups = job_request.group_duplicates([a, *others[:2], same, *others[2:]])
    assert [[r.request_id for r in g] for g in groups] == [["A", "B"], ["C"], ["D"], ["E"], ["F"]]


def test_tag_name_and_message_conventions():
    assert job_request.tag_for("p1", "channel") == "p1:channel" and job_request.tag_for("p1", None) == "p1"
    assert len(job_request.new_request_id()) == 32 and job_request.new_request_id().isupper()
    # 31 May 2023 20:00 UTC is already 1 June in Kolkata.
    when = datetime(2023, 5, 31, 20, 0, tzinfo=UTC)
    assert job_request.report_name("R1", when, ZoneInfo("Asia/Kolkata")) == "R1_20230601"
    assert job_request.report_name("R1", when, ZoneInfo("UTC")) == "R1_20230531"
    assert len(job_request.err_message("x" * 1000)) == 300


# --- the password zip ------------------------------------------------------------------------

CIPHER = PlatformCipher("unit-salt")
CSV = "User UUID,Name\r\nu1,'Zoë, \"Z\"'\r\n".encode() * 200
WHEN = datetime(2024, 2, 29, 23, 59, 58)


def test_password_is_the_decrypted_key_or_the_key_as_given():
    assert zip_password(CIPHER.encrypt("s3cret"), CIPHER) == "s3cret"
    assert zip_password("s3cret", CIPHER) == "s3cret"
    assert zip_password(PlatformCipher("other-salt").encrypt("s3cret"), CIPHER) != "s3cret"


class Unseekable(io.RawIOBase):
    def __init__(self):
        self.buffer = io.BytesIO()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(data)


def zipped(zip_crypto, seekable=True, password="pässword"):
    raw = io.BytesIO() if seekable else Unseekable()
    with encrypted_member(raw, "R1_20240229.csv", password, WHEN, len(CSV), zip_crypto) as member:
        for start in range(0, len(CSV), 1000):
            member.write(CSV[start:start + 1000])
    return (raw if seekable else raw.buffer).getvalue()


def refuses_a_wrong_password(archive, member):
    # The format checks a password against one byte of the key (ZipCrypto; AES: two), so a wrong one gets
    # past that check 1 time in 256 (65,536) and fails later, in inflate or the CRC/HMAC check (CI saw it).
    with pytest.raises((RuntimeError, zlib.error, zipfile.BadZipFile)):
        archive.read(member, pwd=b"wrong")


@pytest.mark.parametrize("seekable", [True, False])
def test_aes_zip_opens_with_the_password_only(seekable):
    data = zipped(zip_crypto=False, seekable=seekable)
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        (info,) = archive.infolist()
        assert info.filename == "R1_20240229.csv" and info.date_time == (2024, 2, 29, 23, 59, 58)
        assert archive.read(info, pwd="pässword".encode()) == CSV
        refuses_a_wrong_password(archive, info)
    with zipfile.ZipFile(io.BytesIO(data)) as archive, pytest.raises(NotImplementedError):
        archive.read("R1_20240229.csv", pwd=b"x")  # the standard library cannot read AES: it is encrypted


@pytest.mark.parametrize("seekable", [True, False])
def test_zip_crypto_opens_with_standard_tools(seekable, tmp_path):
    data = zipped(zip_crypto=True, seekable=seekable)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("R1_20240229.csv", pwd="pässword".encode()) == CSV
        refuses_a_wrong_password(archive, "R1_20240229.csv")
    if shutil.which("unzip"):
        (tmp_path / "r.zip").write_bytes(data)
        out = subprocess.run(["unzip", "-P", "pässword", "-p", str(tmp_path / "r.zip")], capture_output=True)
        assert out.returncode == 0 and out.stdout == CSV


# --- store settings --------------------------------------------------------------------------

def resolved(*argv) -> ReportSources:
    from programusers import cli

    args, _ = cli.build_parser().parse_known_args(["exhaust", *argv])
    return ReportSources.resolve(args, default_model_config())


def test_store_settings_flag_then_environment_then_local_stack(monkeypatch, tmp_path):
    # The model config's endpoints (localhost, Redis port 6381) are the platform's Spark job's: not used.
    for name in ("PROGRAMUSERS_REDIS_HOST", "PROGRAMUSERS_REDIS_PORT", "PROGRAMUSERS_REDIS_DB",
                 "PROGRAMUSERS_CASSANDRA_HOSTS", "PROGRAMUSERS_CASSANDRA_PORT", "PROGRAMUSERS_PROGRAMS_KEYSPACE",
                 "PROGRAMUSERS_CASSANDRA_USERNAME", "PROGRAMUSERS_CASSANDRA_TLS_CA", "PROGRAMUSERS_REDIS_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    stores = resolved()
    assert (stores.redis.host, stores.redis.port, stores.redis.db) == ("127.0.0.1", 6379, 0)
    assert (stores.cassandra.hosts, stores.cassandra.port, stores.programs_keyspace) == (
        ("127.0.0.1",), 9042, "sunbird_programs")
    assert stores.cassandra.protocol_version is None and stores.cassandra.username is None  # negotiated, open

    monkeypatch.setenv("PROGRAMUSERS_REDIS_HOST", "redis-users")
    monkeypatch.setenv("PROGRAMUSERS_REDIS_DB", "12")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_HOSTS", "c1, c2")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_USERNAME", "reporter")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_TLS_CA", str(tmp_path / "ca.pem"))
    stores = resolved()
    assert (stores.redis.host, stores.redis.db, stores.cassandra.hosts) == ("redis-users", 12, ("c1", "c2"))
    assert (stores.cassandra.username, stores.cassandra.tls_ca) == ("reporter", str(tmp_path / "ca.pem"))

    stores = resolved("--redis-host", "h", "--redis-port", "1", "--redis-db", "11", "--programs-keyspace", "ks",
                      "--cassandra-protocol-version", "4", "--cassandra-local-dc", "dc2")
    assert (stores.redis.host, stores.redis.port, stores.redis.db, stores.programs_keyspace) == ("h", 1, 11, "ks")
    assert (stores.cassandra.protocol_version, stores.cassandra.local_dc) == (4, "dc2")


def test_no_secret_is_a_flag_or_an_option():
    from programusers.options import StoreOptions

    names = StoreOptions([]).get_all_options(current_only=True)
    assert not [n for n in names if "password" in n and not n.endswith("password_file")]


@pytest.mark.parametrize("column,width", [("tag", 100), ("requested_by", 50), ("requested_channel", 50),
                                          ("encryption_key", 50)])
def test_values_too_wide_for_job_request_are_caught_before_the_insert(column, width):
    fields = {"tag": "p", "request_id": "R", "request_data": {}}
    assert JobRequest(**{**fields, column: "x" * width}).too_long() is None
    assert JobRequest(**{**fields, column: "x" * (width + 1)}).too_long() == column


# --- leases, staging folders, the zip password ----------------------------------------------------

@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=40))
def test_a_staging_folder_names_its_requests_lease(tag, request_id):
    from programusers.report.lifecycle import lease_of_staging_dir, staging_dir_name
    from programusers.report.request_store import lease_key

    key = lease_key(job_request.JOB_ID, tag, request_id)
    assert -2**63 <= key < 2**63  # PostgreSQL's bigint
    assert lease_of_staging_dir(staging_dir_name(key)) == key
    assert lease_key(job_request.JOB_ID, tag, request_id + "x") != key


@pytest.mark.parametrize("name", ["shard-00001.csv", "tmp", "0123456789abcdef-short", "0123456789ABCDEF-" + "0" * 32])
def test_other_folders_in_staging_are_not_taken_for_request_folders(name):
    from programusers.report.lifecycle import lease_of_staging_dir

    assert lease_of_staging_dir(name) is None


def test_the_zip_password_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from programusers.commands.report import ENCRYPTION_KEY_ENV, read_encryption_key

    monkeypatch.delenv(ENCRYPTION_KEY_ENV, raising=False)
    assert read_encryption_key(None) is None
    monkeypatch.setenv(ENCRYPTION_KEY_ENV, "from env")
    assert read_encryption_key(None) == "from env"
    key_file = tmp_path / "key"
    key_file.write_text("pass word, with spaces\r\n")
    assert read_encryption_key(str(key_file)) == "pass word, with spaces"  # a file wins; its line end is no part
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert read_encryption_key("-") == "from stdin"


def test_progress_shows_counts_only_in_the_steps_order(caplog):
    import logging
    import time

    from programusers.report import progress

    progress.counter("ns", "records").inc(3)  # before the block: not this request's
    with caplog.at_level(logging.INFO, logger="programusers.report.progress"), progress.shown("request R", every=0.05):
        progress.counter("ns", "enrollments_read").inc(1200)
        progress.counter("ns", "records").inc(7)
        progress.count("consent_rows_scanned", 5)  # not a step shown
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "programusers.report.progress"]
    assert lines and lines[-1] == "request R: 1,200 enrollment rows read, 7 report rows built"


def test_the_first_tick_publishes_on_a_machine_booted_seconds_ago(tmp_path, monkeypatch):
    from programusers.report import progress

    monkeypatch.setattr(progress.time, "monotonic", lambda: 5.0)  # the clock of a CI machine just booted
    worker = progress.Publisher(str(tmp_path), every=10)
    worker.setup()
    progress.counter("ns", "records").inc(4)
    worker.tick()
    assert progress.published(str(tmp_path)) == {"records": 4}


def test_progress_of_workers_elsewhere_is_what_they_published(tmp_path, caplog):
    import logging
    import time

    from programusers.report import progress

    staging = str(tmp_path)
    worker = progress.Publisher(staging, every=3600)
    worker.setup()
    progress.counter("ns", "enrollments_read").inc(40)
    worker.tick()  # the first tick publishes; the next ones wait `every`
    progress.counter("ns", "enrollments_read").inc(2)
    worker.tick()
    assert progress.published(staging) == {"enrollments_read": 40}
    worker.flush()
    # Another worker process's file, beside this one's: the submitter sums them.
    (tmp_path / "progress-elsewhere.json").write_text('{"enrollments_read": 100, "records": 9}')
    assert progress.published(staging) == {"enrollments_read": 142, "records": 9}
    with caplog.at_level(logging.INFO, logger="programusers.report.progress"), \
            progress.shown("request R", every=0.05, staging_dir=staging):
        progress.counter("ns", "records").inc(1000)  # this process's tally is not the job's: not shown
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "programusers.report.progress"]
    assert lines and lines[-1] == "request R: 142 enrollment rows read, 9 report rows built"
