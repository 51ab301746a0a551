"""`programusers exhaust` and `submit` on the command line: where the report reads from, and where the zip
password comes from (tests of programusers/commands/report.py)."""
import io
import sys

import pytest

from programusers import cli
from programusers.commands.report import ENCRYPTION_KEY_ENV, exhaust_options, exhaust_sources, read_encryption_key
from programusers.io import postgres
from programusers.model_config import default_model_config
from programusers.pipelines.exhaust import ExhaustSources


def parsed(*argv):
    args, extra = cli.build_parser().parse_known_args(["exhaust", *argv])
    args.pipeline_args = extra
    return args


def resolved(*argv) -> ExhaustSources:
    return exhaust_sources(parsed(*argv), default_model_config())


def test_the_pipeline_gets_its_tuning_and_beam_flags_but_no_store_flag():
    options = exhaust_options(parsed("--read-slices", "4", "--kafka-config", "sasl.jaas.config=secret",
                                     "--cassandra-username", "reporter", "--job_name=x")).get_all_options()
    assert (options["read_slices"], options["job_name"]) == (4, "x")
    assert options["kafka_config"] == [] and options["cassandra_username"] is None


def test_store_settings_flag_then_environment_then_local_stack(monkeypatch, tmp_path):
    # The model config's endpoints (localhost, Redis port 6381) are the platform's Spark job's: not used.
    for name in ("PROGRAMUSERS_REDIS_HOST", "PROGRAMUSERS_REDIS_PORT", "PROGRAMUSERS_REDIS_DB",
                 "PROGRAMUSERS_CASSANDRA_HOSTS", "PROGRAMUSERS_CASSANDRA_PORT", "PROGRAMUSERS_PROGRAMS_KEYSPACE",
                 "PROGRAMUSERS_CASSANDRA_USERNAME", "PROGRAMUSERS_CASSANDRA_TLS_CA", "PROGRAMUSERS_REDIS_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    sources = resolved()
    assert (sources.redis.host, sources.redis.port, sources.redis.db) == ("127.0.0.1", 6379, 0)
    assert (sources.cassandra.hosts, sources.cassandra.port, sources.programs_keyspace) == (
        ("127.0.0.1",), 9042, "sunbird_programs")
    assert sources.cassandra.protocol_version is None and sources.cassandra.username is None  # negotiated, open

    monkeypatch.setenv("PROGRAMUSERS_REDIS_HOST", "redis-users")
    monkeypatch.setenv("PROGRAMUSERS_REDIS_DB", "12")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_HOSTS", "c1, c2")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_USERNAME", "reporter")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_TLS_CA", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("PROGRAMUSERS_PROGRAMS_KEYSPACE", "ks-env")
    sources = resolved()
    assert (sources.redis.host, sources.redis.db, sources.cassandra.hosts) == ("redis-users", 12, ("c1", "c2"))
    assert (sources.cassandra.username, sources.cassandra.tls_ca) == ("reporter", str(tmp_path / "ca.pem"))
    assert sources.programs_keyspace == "ks-env"

    sources = resolved("--redis-host", "h", "--redis-port", "1", "--redis-db", "11", "--programs-keyspace", "ks",
                       "--cassandra-protocol-version", "4", "--cassandra-local-dc", "dc2")
    assert (sources.redis.host, sources.redis.port, sources.redis.db, sources.programs_keyspace) == ("h", 1, 11, "ks")
    assert (sources.cassandra.protocol_version, sources.cassandra.local_dc) == (4, "dc2")


def test_the_zip_password_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ENCRYPTION_KEY_ENV, raising=False)
    assert read_encryption_key(None) is None
    monkeypatch.setenv(ENCRYPTION_KEY_ENV, "from env")
    assert read_encryption_key(None) == "from env"
    key_file = tmp_path / "key"
    key_file.write_text("pass word, with spaces\r\n")
    assert read_encryption_key(str(key_file)) == "pass word, with spaces"  # a file wins; its line end is no part
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert read_encryption_key("-") == "from stdin"


def test_submit_takes_the_zip_password_from_a_file_stdin_or_the_environment_never_argv(test_schema, pg_dsn, unique,
                                                                                      tmp_path, monkeypatch, capsys):
    table = test_schema["job_request_table"]
    base = ["submit", "--program-id", f"p-{unique}", "--requested-by", "m", "--job-request-table", table]
    monkeypatch.delenv("PROGRAMUSERS_ENCRYPTION_KEY", raising=False)
    assert cli.main([*base, "--encryption-key", "on-argv"]) == 2
    assert cli.main(base) == 2  # the packaged config requires a key
    assert capsys.readouterr().out == ""

    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.setattr(sys, "stdin", open(key_file))  # noqa: SIM115
    assert cli.main([*base, "--encryption-key-file", "-"]) == 0
    assert cli.main([*base, "--encryption-key-file", str(key_file)]) == 0
    monkeypatch.setenv("PROGRAMUSERS_ENCRYPTION_KEY", "from-env")
    assert cli.main(base) == 0
    ids = capsys.readouterr().out.split()
    connection = postgres.connect(pg_dsn)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT encryption_key FROM {table} WHERE request_id = ANY(%s) ORDER BY dt_job_submitted",
                       (ids,))
        assert [r[0] for r in cursor.fetchall()] == ["from-file", "from-file", "from-env"]
    connection.close()


@pytest.mark.parametrize("argv,meant", [
    (["exhaust", "--request", "R1"], "--request-id"),
    (["exhaust", "--max-store=5"], "--max-store-outage"),
    (["ingest", "--max-rec", "5"], "--max-records"),
])
def test_a_shortened_flag_is_refused_not_handed_to_beam_to_be_dropped(argv, meant, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and meant in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--max-store-outage", "-1"), ("--min-profile-share", "1.5"),
                                         ("--progress-every", "soon"), ("--rows-per-shard", "0"),
                                         ("--worker-processes", "0"), ("--read-slices", "257")])
def test_a_flag_out_of_its_range_is_refused_naming_it(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        exhaust_options(parsed(flag, value))
    assert exit_.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err
