"""`programusers replay`: the replay's flags as pipeline options, the run to its end, a summary line."""
from __future__ import annotations

import logging
import time

from apache_beam.runners.runner import PipelineState

from programusers import commands
from programusers.metrics import counters
from programusers.options import StoreOptions
from programusers.pipelines.ingest import CassandraWriteOptions, DeadLetterOptions
from programusers.pipelines.replay import ReplayOptions, run

_LOG = logging.getLogger(__name__)


def summary(totals: dict[str, int]) -> str:
    """The run's counts in one line (counts and reasons only)."""
    still_bad = {name.removeprefix("still_bad_"): n for name, n in sorted(totals.items())
                 if name.startswith("still_bad_")}
    return (f"{totals.get('dead_letters_read', 0)} dead letter(s) read, {totals.get('other_reason', 0)} of another "
            f"reason skipped, {totals.get('now_valid', 0)} valid now: {totals.get('rows_written', 0)} row(s) written, "
            f"{totals.get('rows_deleted', 0)} deleted; {sum(still_bad.values())} still bad"
            + (f" ({', '.join(f'{k}={v}' for k, v in still_bad.items())})" if still_bad else "")
            + "; the dead letters stay in the topic")


def _command(args) -> int:
    options = commands.pipeline_options(args)
    writes = options.view_as(CassandraWriteOptions)
    started = time.monotonic()
    result, outage = commands.wait_for(lambda: run(options), options.view_as(StoreOptions).cassandra_connection(),
                                       writes.outage_limit(bounded=True))
    if outage:
        _LOG.error("replay stopped: %s", outage)
        return 3
    if result is None:
        _LOG.error("replay stopped before its end; run it again (its writes are idempotent)")
        return 1
    _LOG.info("replay of %s %s in %.1fs: %s", options.view_as(DeadLetterOptions).dead_letter_topic,
              result.state, time.monotonic() - started,
              summary(counters(result)))
    return 0 if result.state == PipelineState.DONE else 1


def register(subcommands) -> None:
    commands.add_pipeline_command(
        subcommands, "replay", handler=_command, default_runner="DirectRunner",
        option_classes=(DeadLetterOptions, ReplayOptions, CassandraWriteOptions),
        help="write the dead letters that today's code accepts",
        description="Reads the dead-letter topic (all of it, one --reason, or --since a time), parses each "
                    "payload again and writes the valid ones to Cassandra as the ingest would; reports how many "
                    "were written and how many stay bad. Never deletes or re-sends a dead letter.")
