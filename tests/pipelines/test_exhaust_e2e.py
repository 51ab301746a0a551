"""The exhaust end to end on the real stack: the scenario of exhaust_cases.py, its requests run by
`programusers exhaust` on DirectRunner (in process) and PrismRunner (a subprocess). Every request's final
job_request row is checked, and every report byte for byte against a CSV built from the scenario (not
with the code under test)."""
import dataclasses
import os
import re
import subprocess
import sys

import pytest
from exhaust_cases import (
    SALT,
    Run,
    district,
    exhaust_in_process,
    expected_counters,
    expected_csv,
    logged_counters,
    requests,
    status_rows,
    submit,
    unzipped,
)

from programusers import cli
from programusers.report.job_request import JOB_ID

pytestmark = pytest.mark.services

@pytest.fixture(scope="module")
def direct(scenario, pg_dsn, tmp_path_factory):
    table, output = scenario.table, tmp_path_factory.mktemp("reports")
    staging = tmp_path_factory.mktemp("staging")
    ids = {name: submit(pg_dsn, table, request) for name, request in requests(scenario).items()}
    code, logs = exhaust_in_process(scenario, "--output", str(output), "--staging", str(staging))
    return Run(code, ids, logs, output, staging)


def test_published_folder_holds_only_the_reports_and_the_staged_shards_are_gone(direct):
    published = [path.name for path in (direct.output / "program-user-exhaust").iterdir()]
    assert published and all(re.fullmatch(r"\w{32}_20\d{6}\.zip", name) for name in published), published
    assert not list(direct.staging.iterdir())


def test_every_request_ends_as_expected(scenario, direct, pg_dsn):
    assert direct.code == 0
    for name, (program, _, key, _, outcome) in requests(scenario).items():
        row = status_rows(pg_dsn, scenario.table, direct.ids[name])
        if isinstance(outcome, str):
            # A rejection is final (a retry cannot change it); "No Data Found" may change as data arrives.
            iteration = 1 if outcome == "No Data Found" else 3
            assert (row["status"], row["err_message"], row["iteration"], row["download_urls"]) == (
                "FAILED", outcome, iteration, None), name
            continue
        assert (row["status"], row["err_message"], row["iteration"]) == ("SUCCESS", None, 0), name
        assert row["dt_file_created"] and row["dt_job_completed"] and row["execution_time"] > 0
        (url,) = row["download_urls"]
        assert re.fullmatch(r".*/program-user-exhaust/\w{32}_20\d{6}\.zip", url)
        assert len(outcome) > 10 and unzipped(url, key) == expected_csv(program, outcome), name


def test_duplicates_are_produced_once_and_share_the_file(scenario, direct, pg_dsn):
    table = scenario.table
    urls = [status_rows(pg_dsn, table, direct.ids[name])["download_urls"] for name in ("duplicate_1", "duplicate_2")]
    assert urls[0] == urls[1] and direct.ids["duplicate_1"] in urls[0][0]
    produced = sorted(p.name.split("_")[0] for p in (direct.output / JOB_ID).iterdir())
    assert produced == sorted(direct.ids[n] for n in ("district", "dates", "organisation", "duplicate_1"))


def test_rows_and_issues_are_counted(scenario, direct):
    counters = logged_counters(direct.logs, direct.ids["district"])
    assert counters == expected_counters(scenario) and counters["profile_missing"] > 0


def test_worker_processes_write_the_same_bytes(scenario, direct, pg_dsn, tmp_path):
    """On two DirectRunner worker processes (what a large program gets by default) the report is the same."""
    request_id = submit(pg_dsn, scenario.table, requests(scenario)["district"])
    code, logs = exhaust_in_process(scenario, "--request-id", request_id, "--worker-processes", "2",
                                    "--output", str(tmp_path / "reports"), "--staging", str(tmp_path / "staging"))
    assert code == 0 and any("2 worker processes" in line for line in logs)
    rows = [status_rows(pg_dsn, scenario.table, run_id) for run_id in (direct.ids["district"], request_id)]
    assert [r["status"] for r in rows] == ["SUCCESS", "SUCCESS"]
    key = requests(scenario)["district"][2]
    assert unzipped(rows[0]["download_urls"][0], key) == unzipped(rows[1]["download_urls"][0], key)


@pytest.fixture(scope="module")
def prism(scenario, direct, pg_dsn, tmp_path_factory):
    """The district and organisation requests again, each through the CLI on PrismRunner."""
    table, output = scenario.table, tmp_path_factory.mktemp("prism")
    staging = tmp_path_factory.mktemp("prism-staging")
    ids = {name: submit(pg_dsn, table, requests(scenario)[name]) for name in ("district", "organisation")}
    outputs = []
    for request_id in ids.values():  # one run each: FAILED requests of the direct run are pending too
        done = subprocess.run(
            [sys.executable, "-m", "programusers", "exhaust", "--runner", "PrismRunner", "--request-id", request_id,
             "--output", str(output), "--staging", str(staging), *scenario.flags],
            env={**os.environ, "SUNBIRD_ENCRYPTION_KEY": SALT}, capture_output=True, text=True, timeout=300)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]
    return Run(0, ids, outputs, output, staging)


def test_prism_writes_the_same_bytes(scenario, direct, prism, pg_dsn):
    table = scenario.table
    for name in ("district", "organisation"):
        rows = [status_rows(pg_dsn, table, run.ids[name]) for run in (direct, prism)]
        assert [r["status"] for r in rows] == ["SUCCESS", "SUCCESS"]
        key = requests(scenario)[name][2]
        assert unzipped(rows[0]["download_urls"][0], key) == unzipped(rows[1]["download_urls"][0], key)
    assert logged_counters(prism.logs[0].splitlines(), prism.ids["district"]) == expected_counters(scenario)


def test_no_pii_in_logs_or_status(scenario, direct, prism, capsys):
    for request_id in direct.ids.values():
        assert cli.main(["status", request_id, "--job-request-table", scenario.table]) == 0
    text = "\n".join(direct.logs + prism.logs) + capsys.readouterr().out
    assert "SUCCESS" in text and "FAILED" in text and "report_rows_built" in text
    leaked = {value for value in scenario.pii_strings() if value in text}
    assert not leaked, f"{len(leaked)} PII values found in the logs"


def test_submit_exhaust_status_through_the_command_line(scenario, direct, tmp_path, capsys):
    table = ["--job-request-table", scenario.table]
    key_file = tmp_path / "zip-password"
    key_file.write_text("k-cli\n")
    assert cli.main(["submit", "--program-id", "p1", "--filter", "email", "=", "x", "--requested-by", "m",
                     "--encryption-key-file", str(key_file), *table]) == 2
    assert cli.main(["submit", "--program-id", scenario.a.id, "--filter", "user_locations['district_id']", "in",
                     "d-ana,d-chi", "--requested-by", "manager-9", "--channel", "cli",
                     "--encryption-key-file", str(key_file), *table]) == 0
    request_id = capsys.readouterr().out.strip()

    code, _ = exhaust_in_process(scenario, "--request-id", request_id, "--output", str(tmp_path))
    assert code == 0 and cli.main(["status", request_id, *table]) == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert (shown["tag"], shown["status"], shown["iteration"]) == (f"{scenario.a.id}:cli", "SUCCESS", "0")
    assert "k-cli" not in shown.values() and "manager-9" not in shown.values()
    assert unzipped(shown["download_urls"], "k-cli") == expected_csv(scenario.a, scenario.members(
        scenario.a, district("d-ana", "d-chi")))
    assert cli.main(["exhaust", "--request-id", request_id, *scenario.flags]) == 1  # no longer pending


def test_status_of_an_unknown_request_says_so_in_one_line(test_schema, capsys):
    assert cli.main(["status", "no-such-id", "--job-request-table", test_schema["job_request_table"]]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"no report request with id no-such-id in {test_schema['job_request_table']}\n"


def test_a_report_over_protocol_v4_as_cassandra_3_11_and_4_speak(scenario, direct, pg_dsn, tmp_path):
    """The platform's Cassandra 3.11/4.x speak native protocol v4: capped at 4, the same report."""
    from conftest import LOCAL_CASSANDRA

    cluster, _ = dataclasses.replace(LOCAL_CASSANDRA, protocol_version=4).connect()
    assert cluster.protocol_version == 4
    cluster.shutdown()
    program, data, key, channel, users = requests(scenario)["district"]
    request_id = submit(pg_dsn, scenario.table, (program, data, key, channel))
    code, _ = exhaust_in_process(scenario, "--request-id", request_id, "--output", str(tmp_path),
                                 "--cassandra-protocol-version", "4")
    row = status_rows(pg_dsn, scenario.table, request_id)
    assert code == 0 and row["status"] == "SUCCESS"
    assert unzipped(row["download_urls"][0], key) == expected_csv(program, users)
