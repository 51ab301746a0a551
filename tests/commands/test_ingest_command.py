"""`programusers ingest`: its flags as pipeline options, and the runs refused before they start."""
import pytest

from programusers import cli, runners
from programusers.commands import ingest as ingest_command
from programusers.pipelines.ingest import IngestOptions


def parse(*argv):
    args, extra = cli.build_parser().parse_known_args(["ingest", *argv])
    args.pipeline_args = extra
    return args


def test_cli_flags_and_beam_flags_reach_the_pipeline_options():
    options = ingest_command.pipeline_options(parse("--runner", "PrismRunner", "--max-records", "7", "--input-topic", "t.raw",
                                            "--max-write-outage", "30", "--no-commit-offsets", "--job_name=x"))
    view = options.view_as(IngestOptions)
    assert (view.max_records, view.input_topic, view.write_outage_limit, view.commit_offsets) == (7, "t.raw", 30,
                                                                                                  False)
    assert options.get_all_options()["job_name"] == "x"


def test_a_flink_cluster_gets_its_flags_and_may_commit_offsets_while_streaming(tmp_path, monkeypatch):
    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"")
    monkeypatch.setattr(runners, "FLINK_JOB_SERVER_JAR", jar)
    options = ingest_command.pipeline_options(parse("--runner", "FlinkRunner", "--flink_master=flink:8081",
                                            "--checkpointing_interval=60000"))
    # Flink's own options are declared by its job server at submission; here they are kept as given.
    everything = options.get_all_options(retain_unknown_options=True)
    assert (everything["flink_master"], everything["checkpointing_interval"]) == ("flink:8081", "60000")
    assert options.view_as(IngestOptions).commit_offsets and not options.view_as(IngestOptions).bounded


def test_a_run_the_runner_cannot_do_is_refused_up_front():
    with pytest.raises(SystemExit, match="backfills only"):
        ingest_command.pipeline_options(parse("--runner", "DirectRunner"))


@pytest.mark.parametrize("argv,message", [
    (["--max-records", "0"], "argument --max-records: 0 is not in 1.."),
    (["--max-read-time", "0"], "argument --max-read-time: 0 is not in 1.."),
    (["--until", "yesterday"], "argument --until: 'yesterday' is not an ISO-8601"),
    (["--commit-every", "0"], "argument --commit-every: 0 is not in 0.1.."),
    (["--write-concurrency", "0"], "argument --write-concurrency: 0 is not in 1.."),
    (["--retry-backoff", "9"], "argument --retry-backoff: 9 is not in 0..5"),
])
def test_flags_out_of_range_are_refused_up_front_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ingest_command.pipeline_options(parse(*argv))
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_streaming_run_on_prism_commits_offsets_and_any_bounding_flag_makes_a_backfill():
    options = ingest_command.pipeline_options(parse("--runner", "PrismRunner")).view_as(IngestOptions)
    assert options.commit_offsets and not options.bounded
    for flags in (["--backfill"], ["--from", "2026-11-30"], ["--until", "2026-11-30T10:00"], ["--max-records", "5"],
                  ["--max-read-time", "60"]):
        assert IngestOptions(flags).bounded, flags


def test_every_options_class_of_the_cli_parses_together():
    # Beam parses all PipelineOptions subclasses with one parser: a flag defined twice breaks every job.
    assert "input_topic" in runners.pipeline_options("DirectRunner").get_all_options()


def test_without_a_runner_a_backfill_runs_in_this_process_and_a_streaming_run_on_prism():
    in_process = runners.pipeline_options("DirectRunner").get_all_options()["runner"]
    for flags in (["--backfill"], ["--max-records", "5"], ["--until", "2026-11-30"]):
        assert ingest_command.pipeline_options(parse(*flags)).get_all_options()["runner"] == in_process, flags
    assert ingest_command.pipeline_options(parse()).get_all_options()["runner"] == "PrismRunner"
    chosen = ingest_command.pipeline_options(parse("--runner", "PrismRunner", "--backfill"))
    assert chosen.get_all_options()["runner"] == "PrismRunner"
