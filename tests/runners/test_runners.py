"""Each runner this box can run gives the same result; Kafka IO (cross-language) reads real records."""
import gc

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from programusers import runners, settings
from programusers.io.kafka import KafkaClientConfig
from programusers.runners import doctor

pytestmark = pytest.mark.runners
LOCAL_RUNNERS = ["DirectRunner", "PrismRunner"]


@pytest.mark.parametrize("runner", LOCAL_RUNNERS)
def test_cogroupbykey_same_result_on_each_runner(runner, stack):
    with beam.Pipeline(options=runners.pipeline_options(runner)) as pipeline:
        assert_that(doctor.join_enrollments_with_consent(pipeline), equal_to(doctor.JOIN_EXPECTED))


@pytest.mark.parametrize("runner", LOCAL_RUNNERS)
def test_bounded_read_from_kafka(runner, stack, unique):
    topic = f"test.runners.{runner}.{unique}"
    doctor.produce_numbers(KafkaClientConfig(settings.KAFKA_BOOTSTRAP), topic, 25)
    with beam.Pipeline(options=runners.pipeline_options(runner)) as pipeline:
        numbers = doctor.read_numbers(pipeline, KafkaClientConfig(settings.KAFKA_BOOTSTRAP), topic, 25,
                                      settings.EXPANSION_SERVICE)
        assert_that(numbers, equal_to([(i, i) for i in range(25)]))


@pytest.mark.parametrize("runner,flag,constant", [
    ("FlinkRunner", "--flink_job_server_jar", "FLINK_JOB_SERVER_JAR"),
    ("SparkRunner", "--spark_job_server_jar", "SPARK_JOB_SERVER_JAR")])
def test_job_server_runners_take_the_jar_by_path_and_never_download(runner, flag, constant, tmp_path, monkeypatch):
    monkeypatch.setattr(runners, constant, tmp_path / "absent.jar")
    with pytest.raises(runners.RunnerUnavailable, match=flag):
        runners.runner_args(runner)
    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"")
    monkeypatch.setattr(runners, constant, jar)
    args = runners.runner_args(runner)
    assert f"{flag}={jar}" in args and "--environment_type=LOOPBACK" in args
    assert not any(a.startswith(flag) and "://" in a for a in args)


def test_worker_processes_are_wired_for_directrunner_only_and_never_over_the_users_choice():
    ours = runners.pipeline_options("DirectRunner", ["--read-slices=8"])
    wired = runners.with_worker_processes(ours, 2).get_all_options()
    assert (wired["direct_num_workers"], wired["direct_running_mode"], wired["read_slices"]) == (
        2, "multi_processing", 8)
    assert runners.with_worker_processes(ours, 1) is ours
    prism = runners.pipeline_options("PrismRunner")
    assert runners.with_worker_processes(prism, 2) is prism
    threads = runners.pipeline_options("DirectRunner", ["--direct_running_mode=multi_threading"])
    assert runners.with_worker_processes(threads, 2) is threads


def test_collect_less_leaves_the_objects_made_so_far_out_of_the_collector():
    threshold = gc.get_threshold()
    try:
        runners.collect_less()
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (10_000, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
