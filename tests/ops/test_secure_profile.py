"""The product against stores that need credentials and TLS (SPEC §5, "Production stores"): the stack's
secure profile (`scripts/stack up --secure`: Cassandra with PasswordAuthenticator and client TLS, Redis
with an ACL user and TLS, Kafka SASL_SSL, PostgreSQL scram-sha-256 over TLS), driven as an operator
would: the commands in subprocesses, configured only by the profile's environment file."""
import csv
import io
import os
import re
import subprocess
import sys
import uuid

import pytest
import pyzipper
from conftest import REPO

from programusers import settings
from programusers.io.cassandra import CassandraConnection
from programusers.local.demo import DEMO_PASSWORD, load_env_file

pytestmark = pytest.mark.services
SECURE = settings.stack_dir() / "secure"


@pytest.fixture(scope="module")
def secure_env(stack):
    subprocess.run([str(REPO / "scripts" / "stack"), "up", "--secure"], check=True, capture_output=True)
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("PROGRAMUSERS_")]:
        del os.environ[name]
    load_env_file(SECURE / "env")
    env = dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)
    return env


def programusers(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "programusers", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def secrets():
    return [(SECURE / f"{name}.password").read_text().strip() for name in ("cassandra", "redis", "kafka", "postgres")]


def test_the_demo_runs_end_to_end_on_the_secure_profile(secure_env, tmp_path):
    """generate -> Kafka (SASL_SSL) -> ingest on Prism -> Cassandra (login, TLS); submit -> PostgreSQL
    (scram, TLS); exhaust -> Cassandra + Redis (ACL, TLS) -> the two reports."""
    done = programusers(secure_env, "demo", "--users", "120", "--env", f"secure{uuid.uuid4().hex[:6]}",
                        "--output", str(tmp_path), "--redis-db", "3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = dict(re.findall(r"^\s+(PGM-\S+): (\S+\.zip)$", done.stdout, re.M))
    assert set(reports) == {"PGM-PII-2023", "PGM-OPEN-2023"}

    connection = CassandraConnection(port=int(secure_env["PROGRAMUSERS_CASSANDRA_PORT"]), username="programusers",
                                     password_file=secure_env["PROGRAMUSERS_CASSANDRA_PASSWORD_FILE"],
                                     tls_ca=secure_env["PROGRAMUSERS_CASSANDRA_TLS_CA"])
    with connection.session() as session:
        programs = {row[0]: row[1] for row in session.execute(
            "SELECT program_externalId, program_id FROM sunbird_programs.program_enrollment")}
        enrolled = {external: session.execute("SELECT COUNT(*) FROM sunbird_programs.program_enrollment "
                                              "WHERE program_id = %s", (program,)).one()[0]
                    for external, program in programs.items()}
    with pyzipper.AESZipFile(reports["PGM-PII-2023"]) as archive:
        rows = list(csv.reader(io.StringIO(archive.read(archive.namelist()[0], pwd=DEMO_PASSWORD.encode()).decode())))
    assert len(rows) - 1 == enrolled["PGM-PII-2023"] > 0  # every enrolled user, ingested through the secure stores
    assert "Consent Provided" in rows[0] and any(row[rows[0].index("Email ID(On user consent)")] for row in rows[1:])

    output = done.stdout + done.stderr
    assert not [secret for secret in secrets() if secret in output]


def test_the_secure_profiles_reports_go_to_azurite_over_https_and_open_through_their_links(secure_env):
    """The report store of the secure profile: Azurite over HTTPS (the stack's CA) with an account and key of
    its own; the demo fetches each report through the read-only link it signs."""
    done = programusers(secure_env, "demo", "--users", "80", "--env", f"secure{uuid.uuid4().hex[:6]}",
                        "--store", "azure", "--redis-db", "3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    locations = re.findall(r"^\s+PGM-\S+: (\S+)$", done.stdout, re.M)
    links = re.findall(r"signed link \(read-only, 30 minutes\): (\S+)", done.stdout)
    downloaded = re.findall(r"downloaded through it to (\S+\.zip)", done.stdout)
    assert len(locations) == len(links) == len(downloaded) == 2
    # The CLI's request shows its store location; the API's, its link without the signature.
    assert sorted(location.split("/ml_reports/")[0] for location in locations) == [
        "azfs://programusers/demo-reports", "https://127.0.0.1:10100/programusers/demo-reports"]
    assert all(link.startswith("https://127.0.0.1:10100/programusers/") and "sp=r&spr=https&" in link for link in links)
    with pyzipper.AESZipFile(downloaded[0]) as archive:
        rows = list(csv.reader(io.StringIO(archive.read(archive.namelist()[0], pwd=DEMO_PASSWORD.encode()).decode())))
    assert rows[0][0] == "User UUID" and len(rows) > 1
    output = done.stdout + done.stderr
    assert secure_env["azure_storage_secret"] not in output
    assert not [secret for secret in secrets() if secret in output]


def with_wrong(env, variable, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    return {**env, variable: str(wrong)}


def test_wrong_cassandra_credentials_give_one_clear_line(secure_env, tmp_path):
    done = programusers(with_wrong(secure_env, "PROGRAMUSERS_CASSANDRA_PASSWORD_FILE", tmp_path), "init")
    assert done.returncode == 2
    assert "init stopped: Cassandra refused the login" in done.stderr
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr


def test_wrong_postgres_credentials_give_one_clear_line(secure_env, tmp_path):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(re.sub(r":[^:\n]+$", ":not-the-password", (SECURE / "pgpass").read_text().strip()) + "\n")
    pgpass.chmod(0o600)
    env = {**secure_env, "PROGRAMUSERS_POSTGRES_DSN": secure_env["PROGRAMUSERS_POSTGRES_DSN"].replace(
        str(SECURE / "pgpass"), str(pgpass))}
    done = programusers(env, "status", "0" * 32)
    assert done.returncode == 2 and "status stopped: PostgreSQL refused the login" in done.stderr
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr


def test_without_tls_the_secure_stores_refuse_us(secure_env):
    """The profile really is secure: the same user without TLS gets nowhere."""
    env = {**secure_env, "PROGRAMUSERS_CASSANDRA_TLS_CA": "", "PROGRAMUSERS_POSTGRES_DSN":
           secure_env["PROGRAMUSERS_POSTGRES_DSN"].replace("sslmode=verify-full", "sslmode=disable")}
    assert "Cassandra is unreachable" in programusers(env, "init").stderr
    assert "PostgreSQL refused the login" in programusers(env, "status", "0" * 32).stderr


def test_a_request_whose_cache_refuses_the_login_fails_naming_it(secure_env, tmp_path):
    env = {**secure_env, "PROGRAMUSERS_ENCRYPTION_KEY": "k", "SUNBIRD_ENCRYPTION_KEY": "secure-test-salt"}
    table = f"secure_job_request_{uuid.uuid4().hex[:8]}"
    assert programusers(env, "init", "--job-request-table", table).returncode == 0
    program = f"p-{uuid.uuid4().hex[:8]}"
    connection = CassandraConnection(port=int(env["PROGRAMUSERS_CASSANDRA_PORT"]), username="programusers",
                                     password_file=env["PROGRAMUSERS_CASSANDRA_PASSWORD_FILE"],
                                     tls_ca=env["PROGRAMUSERS_CASSANDRA_TLS_CA"])
    with connection.session() as session:
        session.execute("INSERT INTO sunbird_programs.program_enrollment (program_id, user_id, pii_consent_required) "
                        "VALUES (%s, 'u1', true)", (program,))
        session.execute("INSERT INTO sunbird.user_consent (user_id, consumer_id, object_id, status) "
                        "VALUES ('u1', 'c', %s, 'ACTIVE')", (program,))
    submitted = programusers(env, "submit", "--program-id", program, "--requested-by", "m",
                             "--job-request-table", table)
    assert submitted.returncode == 0, submitted.stderr
    request_id = submitted.stdout.strip()
    done = programusers(with_wrong(env, "PROGRAMUSERS_REDIS_PASSWORD_FILE", tmp_path), "exhaust", "--request-id",
                        request_id, "--job-request-table", table, "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    status = programusers(env, "status", request_id, "--job-request-table", table).stdout
    assert "status: FAILED" in status
    assert "err_message: the user cache (Redis) refused the login (check the user and its password)" in status
    assert "not-the-password" not in done.stderr
