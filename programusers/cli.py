"""The `programusers` command: one subcommand per job."""
import argparse
import logging

from programusers import commands, schema, settings, store_errors
from programusers.commands import api, ingest, replay, report
from programusers.io import cassandra
from programusers.local import demo, sample_data
from programusers.options import from_args, keyspace_flags, store_flags
from programusers.runners import RUNNERS

_LOG = logging.getLogger(__name__)


def _init(args) -> int:
    from programusers.io import postgres

    with from_args(args).cassandra_connection().session() as session:
        schema.init_cassandra(session, args.programs_keyspace, args.consent_keyspace, args.replication)
    with postgres.session(args.postgres_dsn) as connection:
        schema.init_postgres(connection, args.job_request_table, settings.LINK_AUDIT_TABLE)
    _LOG.info("schema ready: Cassandra %s.%s, %s.%s; PostgreSQL %s", args.programs_keyspace,
              schema.ENROLLMENT_TABLE, args.consent_keyspace, schema.CONSENT_TABLE, args.job_request_table)
    return 0


def _doctor(args) -> int:
    from programusers.runners import doctor

    for runner in args.runner:
        doctor.check(runner, args.pipeline_args, from_args(args).kafka_client(), args.expansion_service)
    return 0


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    store_flags(parser)
    keyspace_flags(parser)
    report.job_request_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="programusers", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True)

    init = subcommands.add_parser("init", help="create the Cassandra and PostgreSQL schema (idempotent)")
    _add_store_flags(init)
    init.add_argument("--replication", default=settings.REPLICATION, help="CQL replication map for new keyspaces")
    init.set_defaults(handler=_init)

    doctor = subcommands.add_parser("doctor", help="run a tiny join and a Kafka read on each runner given")
    doctor.add_argument("--runner", action="append", choices=RUNNERS, required=True)
    store_flags(doctor)
    doctor.add_argument("--expansion-service", default=settings.EXPANSION_SERVICE)
    doctor.set_defaults(handler=_doctor, passes_flags_to_beam=True)

    sample_data.register(subcommands)
    ingest.register(subcommands)
    replay.register(subcommands)
    report.register(subcommands)
    api.register(subcommands)
    demo.register(subcommands)
    return parser


def _without_driver_tracebacks(record: logging.LogRecord) -> bool:
    """The Cassandra driver logs a traceback with each failed connection: its line is enough (a command
    that cannot go on says why in one line of its own)."""
    if record.name.startswith("cassandra"):
        record.exc_info = record.exc_text = None
    return True


def main(argv: list[str] | None = None) -> int:
    # Our own progress at INFO; Beam's runner and worker chatter (some of it on the root logger) only
    # from WARNING up, else it drowns the job's lines.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("programusers").setLevel(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every HTTP request at INFO
    for handler in logging.getLogger().handlers:
        handler.addFilter(_without_driver_tracebacks)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if command := getattr(args, "command_parser", None):
        commands.refuse_abbreviations(command, extra)
    elif extra and not getattr(args, "passes_flags_to_beam", False):  # a command of no pipeline drops nothing unread
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pipeline_args = extra
    try:
        return args.handler(args)
    except Exception as error:
        # A store that is down or refuses us is named in one line, without a traceback or the error's text.
        if problem := store_errors.classify(error):
            _LOG.error("%s stopped: %s", args.command, problem)
            return 2
        raise
    finally:
        cassandra.close_shared_sessions()
