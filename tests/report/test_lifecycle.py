"""The exhaust left unattended (SPEC §5, "Exhaust claims and crashes"), on the real stack: overlapping runs,
a run killed mid-request, rejections, a user cache that goes down or comes back empty, permissions and
secrets. Each test has a job_request table of its own, so only its own requests are pending."""
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import redis
from conftest import REPO
from exhaust_cases import (
    SALT,
    d_ana_report,
    enrollment,
    exhaust_in_process,
    f,
    flags,
    load_cache,
    status_rows,
    submit,
    submit_district,
    unzipped,
)

from programusers import cli, settings
from programusers.io import postgres
from programusers.report.job_request import JOB_ID
from programusers.report.request_store import RequestStore

pytestmark = pytest.mark.services



def exhaust_process(scenario, table, output, staging, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "programusers", "exhaust", "--runner", "DirectRunner", "--output", str(output),
         "--staging", str(staging), *flags(scenario, table), *args],
        env={**os.environ, "SUNBIRD_ENCRYPTION_KEY": SALT}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def published(output) -> list[str]:
    folder = output / JOB_ID
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_two_overlapping_runs_produce_each_request_once(scenario, pg_dsn, table, tmp_path):
    ids = [submit_district(pg_dsn, table, scenario, key=f"k-{n}", by=f"manager-{n}") for n in range(10)]
    output, staging = tmp_path / "out", tmp_path / "staging"
    runs = [exhaust_process(scenario, table, output, staging) for _ in range(2)]
    logs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]

    for n, request_id in enumerate(ids):
        row = status_rows(pg_dsn, table, request_id)
        assert (row["status"], row["iteration"]) == ("SUCCESS", 0)
        assert unzipped(row["download_urls"][0], f"k-{n}") == d_ana_report(scenario)
        producers = [log for log in logs if re.search(rf"request {request_id}: SUCCESS", log)]
        assert len(producers) == 1, f"request {n} produced by {len(producers)} runs"
    assert len(published(output)) == 10 and all(re.fullmatch(r"\w{32}_\d{8}\.zip", n) for n in published(output))
    assert all("request" in log for log in logs)  # both runs took part
    assert not list(staging.iterdir())


def test_a_run_killed_mid_request_leaves_nothing_published_and_the_next_run_produces_it(scenario, pg_dsn, table,
                                                                                       tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    output, staging = tmp_path / "out", tmp_path / "staging"
    run = exhaust_process(scenario, table, output, staging)
    deadline = time.monotonic() + 120
    # Killed once the request is PROCESSING and its private staging folder exists: the pipeline is running.
    while not (status_rows(pg_dsn, table, request_id)["status"] == "PROCESSING" and staging.exists()
               and list(staging.iterdir())):
        assert run.poll() is None and time.monotonic() < deadline, "the exhaust ended before it could be killed"
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)

    assert status_rows(pg_dsn, table, request_id)["status"] == "PROCESSING"
    assert published(output) == []  # no report, no .part
    (left,) = list(staging.iterdir())
    assert stat.S_IMODE(left.stat().st_mode) == 0o700

    code, logs = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(output),
                                    "--staging", str(staging))
    row = status_rows(pg_dsn, table, request_id)
    assert code == 0 and (row["status"], row["iteration"], row["err_message"]) == ("SUCCESS", 1, None)
    assert unzipped(row["download_urls"][0], "k-district") == d_ana_report(scenario)
    assert published(output) == [os.path.basename(row["download_urls"][0])]
    assert not list(staging.iterdir())  # the dead run's staging is gone
    assert any(f"request {request_id}: interrupted" in line for line in logs)


def test_a_live_runs_request_is_not_reclaimed(scenario, pg_dsn, table, tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    with RequestStore(pg_dsn, table, leases=True) as live:  # stands for a live exhaust holding the request
        (request,) = live.pending(request_id)
        assert live.claim(request)
        code, _ = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path))
        row = status_rows(pg_dsn, table, request_id)
        assert code == 0 and (row["status"], row["iteration"]) == ("PROCESSING", 0)
    code, _ = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path))
    assert (status_rows(pg_dsn, table, request_id)["status"], code) == ("SUCCESS", 0)


def test_a_request_interrupted_three_times_fails_for_good(scenario, pg_dsn, table, tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    connection = postgres.connect(pg_dsn)
    with connection, connection.cursor() as cursor:  # as left by a third exhaust that died
        cursor.execute(f"UPDATE {table} SET status = 'PROCESSING', iteration = 2 WHERE request_id = %s",
                       (request_id,))
    connection.close()
    code, _ = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path))
    row = status_rows(pg_dsn, table, request_id)
    assert code == 0 and (row["status"], row["iteration"], row["err_message"]) == ("FAILED", 3, "interrupted")
    assert published(tmp_path) == []


def test_rejections_are_final_and_reports_are_private(scenario, pg_dsn, table, tmp_path):
    rejected = submit(pg_dsn, table, (scenario.a, enrollment(f("email", "=", "x@y"), program=scenario.a), "k", None))
    produced = submit_district(pg_dsn, table, scenario)
    code, _ = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path))
    assert code == 0
    row = status_rows(pg_dsn, table, rejected)
    assert (row["status"], row["iteration"]) == ("FAILED", 3)
    (report,) = status_rows(pg_dsn, table, produced)["download_urls"]
    assert stat.S_IMODE(os.stat(report).st_mode) == 0o600

    code, logs = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path))
    assert code == 0 and any("0 pending request(s)" in line for line in logs)
    assert status_rows(pg_dsn, table, rejected)["iteration"] == 3


def stop_redis():
    redis.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT).shutdown(nosave=True)


def start_stack():
    subprocess.run([str(REPO / "scripts" / "stack"), "up"], check=True, capture_output=True)


def test_redis_down_then_back_empty_then_loaded(scenario, pg_dsn, table, tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    run = ["--job-request-table", table, "--output", str(tmp_path), "--max-store-outage", "2"]
    stop_redis()
    try:
        code, _ = exhaust_in_process(scenario, *run)
        row = status_rows(pg_dsn, table, request_id)
        assert code == 0 and (row["status"], row["iteration"], row["err_message"]) == (
            "FAILED", 1, "the user cache (Redis) is unreachable")
    finally:
        start_stack()

    # Back, but empty (it keeps no data across a restart here): blank personal columns are not published.
    code, _ = exhaust_in_process(scenario, *run)
    row = status_rows(pg_dsn, table, request_id)
    assert (row["status"], row["iteration"], row["err_message"]) == (
        "FAILED", 2, "the user cache has no profile for any consenting user")
    assert published(tmp_path) == []

    load_cache(scenario)
    code, _ = exhaust_in_process(scenario, *run)
    row = status_rows(pg_dsn, table, request_id)
    assert (row["status"], row["iteration"], row["err_message"]) == ("SUCCESS", 2, None)
    assert unzipped(row["download_urls"][0], "k-district") == d_ana_report(scenario)


def test_redis_back_within_the_outage_limit_the_request_succeeds_in_the_same_run(scenario, pg_dsn, table,
                                                                                 tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    stop_redis()
    lines = []
    try:
        run = exhaust_process(scenario, table, tmp_path / "out", tmp_path / "staging", "--max-store-outage", "120")
        def read_output():
            for line in run.stdout:
                lines.append(line)

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        # Redis comes back only once the run has met the outage and said it waits (a fixed pause was too
        # short on a slow machine: its first lookup came after Redis was back).
        deadline = time.monotonic() + 120
        while not any("the user cache (Redis) is unreachable" in line for line in lines):
            assert time.monotonic() < deadline and run.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.1)
    finally:
        start_stack()
        load_cache(scenario)
    run.wait(timeout=300)
    reader.join(timeout=10)
    log = "".join(lines)
    row = status_rows(pg_dsn, table, request_id)
    assert run.returncode == 0 and (row["status"], row["iteration"]) == ("SUCCESS", 0), log[-3000:]
    assert "the user cache (Redis) is unreachable" in log  # it waited, and said so
    assert unzipped(row["download_urls"][0], "k-district") == d_ana_report(scenario)


def test_cassandra_unreachable_past_the_outage_limit_fails_the_request_for_a_later_run(scenario, pg_dsn, table,
                                                                                      tmp_path):
    request_id = submit_district(pg_dsn, table, scenario)
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path),
                                    "--cassandra-port", "1", "--max-store-outage", "3")
    row = status_rows(pg_dsn, table, request_id)
    assert code == 0 and (row["status"], row["iteration"], row["err_message"]) == (
        "FAILED", 1, "Cassandra is unreachable")
    assert any("trying again" in line for line in logs)  # it waited before giving up
    code, _ = exhaust_in_process(scenario, "--job-request-table", table, "--output", str(tmp_path))
    assert status_rows(pg_dsn, table, request_id)["status"] == "SUCCESS"


def test_a_runner_with_remote_workers_needs_shared_staging(scenario, table, caplog):
    code = cli.main(["exhaust", "--runner", "PrismRunner", *flags(scenario, table), "--environment_type=EXTERNAL",
                     "--environment_config=localhost:50000"])
    assert code == 2 and "pass --staging with a location they share" in caplog.text
