"""Runner wiring: turns `--runner NAME` plus our flags into PipelineOptions that work on this box.

- DirectRunner: Beam's in-process portable runner (FnApiRunner). Beam 2.73's DirectRunner would first
  try Prism, which it downloads from the web; we never let it.
- PrismRunner: Beam's portable runner built from the Go module proxy (`scripts/stack fetch`), given
  to Beam by path. It runs streaming pipelines and cross-language transforms. LOOPBACK by default (the
  SDK worker is the submitting process); `--environment_type=EXTERNAL --environment_config=HOST:PORT`
  hands the bundles to a Python SDK worker pool instead (local/worker_pool.py).
- FlinkRunner / SparkRunner: Beam's job-server jars, passed by path (`--flink_job_server_jar`,
  `--spark_job_server_jar`, or the jar in the tools cache), LOOPBACK environment, Java 17 flags.
  Beam's own download from a URL is never attempted: a missing jar is a clear error.
"""
import gc
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from programusers import settings

BEAM_VERSION = "2.73.0"
FLINK_VERSION = "1.20"
TOOLS = Path(settings.CACHE)
PRISM_BINARY = TOOLS / "bin" / f"prism-{BEAM_VERSION}"
FLINK_JOB_SERVER_JAR = TOOLS / "jars" / f"beam-runners-flink-{FLINK_VERSION}-job-server-{BEAM_VERSION}.jar"
SPARK_JOB_SERVER_JAR = TOOLS / "jars" / f"beam-runners-spark-3-job-server-{BEAM_VERSION}.jar"

# Spark 3 on Java 17 needs these opened, else IllegalAccessError on sun.nio.ch.DirectBuffer.
_SPARK_JAVA17_OPENS = [
    "java.base/java.lang", "java.base/java.lang.invoke", "java.base/java.lang.reflect", "java.base/java.io",
    "java.base/java.net", "java.base/java.nio", "java.base/java.util", "java.base/java.util.concurrent",
    "java.base/java.util.concurrent.atomic", "java.base/jdk.internal.ref", "java.base/sun.nio.ch",
    "java.base/sun.nio.cs", "java.base/sun.security.action", "java.base/sun.util.calendar",
]

_LOG = logging.getLogger(__name__)
RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner", "SparkRunner")
PRISM_JOB_STREAM_TIMEOUT_S = 7 * 24 * 3600  # longer than any batch job (a streaming job on Prism still ends after it)


class RunnerUnavailable(RuntimeError):
    """The runner's binary or jar is not on this machine."""


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _require(path: Path, flag: str, what: str) -> str:
    if not path.is_file():
        raise RunnerUnavailable(
            f"{what} not found at {path}; pass {flag}=PATH (see README, 'Runners'). "
            "Beam's download from a URL is disabled here.")
    return str(path)


def runner_args(runner: str, args: list[str] | None = None) -> list[str]:
    """The pipeline arguments for `runner` on this machine, with the caller's `args` taking precedence."""
    args = list(args or [])
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if runner == "DirectRunner":
        wired = ["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner"]
    elif runner == "PrismRunner":
        wired = ["--runner=PrismRunner"]
        if not _has_flag(args, "--job_server_timeout"):
            # Beam also gives the job's state and message streams this deadline (300 s by default), so
            # a Prism job that runs longer fails with DEADLINE_EXCEEDED (apache/beam#35867; seen here on
            # a 1,000,000-row exhaust). Prism runs on this machine: no need for a short one.
            wired.append(f"--job_server_timeout={PRISM_JOB_STREAM_TIMEOUT_S}")
        if not _has_flag(args, "--environment_type"):
            wired.append("--environment_type=LOOPBACK")
        if not _has_flag(args, "--prism_location"):
            wired.append("--prism_location=" + _require(PRISM_BINARY, "--prism_location", "Prism binary"))
    elif runner == "FlinkRunner":
        wired = ["--runner=FlinkRunner", "--environment_type=LOOPBACK", f"--flink_version={FLINK_VERSION}",
                 "--job_server_jvm_property=--add-opens=java.base/java.util=ALL-UNNAMED"]
        if not _has_flag(args, "--flink_master"):
            wired.append("--flink_master=[local]")
        if not _has_flag(args, "--flink_job_server_jar"):
            wired.append("--flink_job_server_jar="
                         + _require(FLINK_JOB_SERVER_JAR, "--flink_job_server_jar", "Flink job-server jar"))
    else:
        wired = ["--runner=SparkRunner", "--environment_type=LOOPBACK"]
        wired += [f"--job_server_jvm_property=--add-opens={m}=ALL-UNNAMED" for m in _SPARK_JAVA17_OPENS]
        if not _has_flag(args, "--spark_master_url"):
            wired.append("--spark_master_url=local[2]")
            # An embedded Spark binds to loopback; a cluster's executors must reach the driver.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        if not _has_flag(args, "--spark_job_server_jar"):
            wired.append("--spark_job_server_jar="
                         + _require(SPARK_JOB_SERVER_JAR, "--spark_job_server_jar", "Spark job-server jar"))
    return wired + [a for a in args if not a.startswith("--runner")]


def pipeline_options(runner: str, args: list[str] | None = None, **overrides) -> PipelineOptions:
    return PipelineOptions(runner_args(runner, args), **overrides)


_IN_PROCESS = runner_args("DirectRunner")[0].split("=", 1)[1]


def with_worker_processes(options: PipelineOptions, processes: int) -> PipelineOptions:
    """A copy of DirectRunner `options` running the bundles on `processes` worker processes (1: in this
    process). Other runners' options, and options that already say how DirectRunner runs
    (--direct_num_workers, --direct_running_mode), are returned as they are."""
    chosen = options.get_all_options(drop_default=True)
    if processes < 2 or chosen.get("runner") != _IN_PROCESS or chosen.keys() & {"direct_num_workers",
                                                                               "direct_running_mode"}:
        return options
    return PipelineOptions(**chosen, direct_num_workers=processes, direct_running_mode="multi_processing")


def collect_less() -> None:
    """Python's garbage collector tuned for a process that runs a pipeline's bundles itself (DirectRunner,
    Prism's LOOPBACK): what exists now (Beam's and the drivers' modules, about 180,000 objects, which live as
    long as the process) is frozen out of the collector's passes, and a young collection waits for 10,000
    new objects instead of 700. A 20,000-event backfill spent 1.1 s of its 5.4 s collecting, then 0.1 s,
    and the exit's final collection (0.5 s) went too."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (Kubernetes' stop) ended a job: it was cancelled. `result` is its PipelineResult,
    None when Ctrl-C stopped its job server with it (no result is left to read)."""

    def __init__(self, result: PipelineResult | None):
        super().__init__()
        self.result = result


def _stop(signum, frame):
    raise KeyboardInterrupt


def run_and_wait(start: Callable[[], PipelineResult]) -> PipelineResult:
    """Runs `start()` (which starts a job and returns its PipelineResult) to the job's end and returns the
    result, for every pipeline and runner alike. Ctrl-C or SIGTERM cancel the job and raise Stopped. A
    failed job raises its error: the in-process runner raises the worker's own error from `start()`,
    Prism quotes it from wait_until_finish()."""
    previous = signal.signal(signal.SIGTERM, _stop)
    result = None
    try:
        result = start()
        result.wait_until_finish()
        return result
    except KeyboardInterrupt:
        _LOG.info("stopping the job")
        if result is not None:
            try:
                result.cancel()
            except ValueError:  # Ctrl-C: Beam's own handler already stopped the job server, the job with it
                result = None
        raise Stopped(result) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
