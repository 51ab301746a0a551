"""The `programusers` command (programusers/cli.py): its subcommands, the flags a pipeline command refuses
or hands to Beam, one line and exit code 2 when a store is down, and `init` run twice."""
import os
import socket
import subprocess
import sys
import uuid

import pytest
from conftest import REPO

from programusers import cli, commands, schema
from programusers.io import postgres

SECRET = "s3cret-Pa55word"
# The README's commands.
COMMANDS = {"init", "doctor", "generate", "ingest", "replay", "submit", "status", "exhaust", "link", "serve", "audit",
            "demo"}
PIPELINE_COMMANDS = ("ingest", "replay", "exhaust")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_every_command_is_offered_with_its_help():
    parser = cli.build_parser()
    (subcommands,) = (action for action in parser._actions if action.dest == "command")
    assert set(subcommands.choices) >= COMMANDS
    listed = parser.format_help()
    assert all(name in listed for name in COMMANDS)
    with pytest.raises(SystemExit) as exited:
        parser.parse_known_args([])  # a command is required
    assert exited.value.code == 2


@pytest.mark.parametrize("argv, refused, meant", [
    (["exhaust", "--request", "R1"], "--request", "--request-id"),
    (["exhaust", "--max-store=5"], "--max-store", "--max-store-outage"),
    (["exhaust", "--cassandra-p", "9042"], "--cassandra-p",
     "--cassandra-port or --cassandra-password-file or --cassandra-protocol-version"),
    (["ingest", "--max-rec", "5"], "--max-rec", "--max-records"),
    (["replay", "--reas", "write_failed"], "--reas", "--reason"),
])
def test_a_shortened_flag_of_a_pipeline_command_is_refused_before_anything_runs(argv, refused, meant, capsys):
    # Were it run, the command would meet closed ports (and return 2 rather than exit).
    port = str(closed_port())
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--cassandra-hosts", "127.0.0.1", "--cassandra-port", port, "--kafka-bootstrap",
                  f"127.0.0.1:{port}"])
    assert exited.value.code == 2
    assert f"{refused}: flags are not abbreviated; did you mean {meant}?" in capsys.readouterr().err


@pytest.mark.parametrize("command", PIPELINE_COMMANDS)
def test_flags_a_pipeline_command_does_not_know_are_handed_to_beam_as_given(command):
    beam = ["--job_name=nightly", "--flink_master", "flink:8081", "--max_num_workers=3"]
    args, passed_on = cli.build_parser().parse_known_args([command, *beam, "--runner", "DirectRunner"])
    commands.refuse_abbreviations(args.command_parser, passed_on)  # none refused
    assert passed_on == beam and args.runner == "DirectRunner"


@pytest.mark.parametrize("argv, unknown", [(["status", "R" * 32, "--bogus"], "--bogus"),
                                           (["init", "--replicaton", "{}"], "--replicaton {}"),
                                           (["generate", "--users", "3", "--sed", "1"], "--sed 1")])
def test_a_flag_a_command_of_no_pipeline_does_not_know_is_refused_not_ignored(argv, unknown, capsys):
    # Nothing would read it: a misspelt flag must not leave the command running with its default.
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2 and f"unrecognized arguments: {unknown}" in capsys.readouterr().err


def programusers(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "programusers", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("argv, line", [
    (lambda port: ["init", "--cassandra-hosts", "127.0.0.1", "--cassandra-port", port],
     "init stopped: Cassandra is unreachable"),
    (lambda port: ["status", "R" * 32, "--postgres-dsn",
                   f"host=127.0.0.1 port={port} user=reporter password={SECRET} dbname=programusers"],
     "status stopped: PostgreSQL is unreachable"),
    (lambda port: ["link", "R" * 32, "--postgres-dsn", f"postgresql://reporter:{SECRET}@127.0.0.1:{port}/x"],
     "link stopped: PostgreSQL is unreachable"),
])
def test_a_store_that_is_down_ends_a_command_with_exit_2_and_one_line_naming_it(argv, line):
    done = programusers(*argv(str(closed_port())))
    # The command's own line (a driver may log its own failed connection too, in one line without traceback).
    said = [text for text in done.stderr.splitlines() if " ERROR programusers" in text]
    assert (done.returncode, len(said)) == (2, 1), done.stderr[-3000:]
    assert said[0].endswith(line)
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout


def test_init_is_idempotent_and_keeps_what_the_tables_hold(stack, cassandra_session, pg_dsn):
    unique = uuid.uuid4().hex[:8]
    programs, consent, table = f"test_init_p_{unique}", f"test_init_c_{unique}", f"test_init_jr_{unique}"
    argv = ["init", "--programs-keyspace", programs, "--consent-keyspace", consent, "--job-request-table", table,
            "--postgres-dsn", pg_dsn]
    try:
        assert cli.main(argv) == 0
        cassandra_session.execute(f"INSERT INTO {programs}.{schema.ENROLLMENT_TABLE} (program_id, user_id) "
                                  "VALUES ('p', 'u')")
        with postgres.session(pg_dsn) as connection:
            postgres.query(connection, f"INSERT INTO {table} (tag, request_id, job_id, status) "
                                       "VALUES ('p', 'R1', 'program-user-exhaust', 'SUBMITTED')")
        assert cli.main(argv) == 0
        assert len(list(cassandra_session.execute(f"SELECT user_id FROM {programs}.{schema.ENROLLMENT_TABLE}"))) == 1
        with postgres.session(pg_dsn) as connection:
            assert postgres.query(connection, f"SELECT request_id FROM {table}") == [{"request_id": "R1"}]
    finally:
        with postgres.session(pg_dsn) as connection:
            postgres.query(connection, f"DROP TABLE IF EXISTS {table}")
        for keyspace in (programs, consent):
            cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
