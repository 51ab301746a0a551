"""The command line, one module per command (ingest, replay) or group of commands (report: submit,
status, exhaust); programusers/cli.py assembles them with init, doctor and the local ones."""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from programusers import runners
from programusers.io import cassandra_sink
from programusers.io.cassandra import CassandraConnection
from programusers.options import StoreOptions, option_values, store_flags


def add_pipeline_command(commands, name: str, *, handler, option_classes: tuple[type[PipelineOptions], ...],
                         default_runner: str, **parser_args) -> argparse.ArgumentParser:
    """A subcommand running one pipeline: --runner, the flags of `option_classes` and of the stores; the
    flags it does not know go to Beam (e.g. --flink_master)."""
    parser = commands.add_parser(name, allow_abbrev=False, **parser_args)
    parser.add_argument("--runner", choices=runners.RUNNERS, default=default_runner)
    for options in option_classes:
        options._add_argparse_args(parser)
    store_flags(parser)
    parser.set_defaults(handler=handler, option_classes=option_classes, command_parser=parser)
    return parser


def refuse_abbreviations(parser: argparse.ArgumentParser, passed_on: list[str]) -> None:
    """A pipeline command hands the flags it does not know to Beam, and Beam drops the ones it does not know
    either: so a shortened flag of the command's own (`--request` for `--request-id`) would be ignored
    without a word. Exits 2 naming it instead. (Abbreviations are off: one could swallow a Beam flag.)"""
    own = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    for arg in passed_on:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in own and (meant := [f for f in own if f.startswith(flag)]):
            parser.error(f"{flag}: flags are not abbreviated; did you mean {' or '.join(meant)}?")


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    """The pipeline options of a command added by add_pipeline_command, from its parsed flags."""
    return runners.pipeline_options(args.runner, args.pipeline_args,
                                    **option_values(args, *args.option_classes, StoreOptions))


def wait_for(start, cassandra: CassandraConnection, outage_limit: float | None
             ) -> tuple[PipelineResult | None, str | None]:
    """runners.run_and_wait for a job writing to `cassandra` (the ingest, the replay): (its result, None) at
    its end or once Ctrl-C or SIGTERM stopped it (None for the result when the job server stopped with it);
    (None, the reason for an operator) when Cassandra stayed unreachable past `outage_limit`."""
    try:
        return runners.run_and_wait(start), None
    except runners.Stopped as stopped:
        return stopped.result, None
    except Exception as error:
        if message := cassandra_sink.outage(error, cassandra, outage_limit):
            return None, (f"{message} (--max-write-outage); none dead-lettered, no offset committed past the "
                          "writes held: re-run once it answers")
        raise
