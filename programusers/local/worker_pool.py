"""A Beam Python SDK worker pool on this machine, for pipelines whose workers are not the submitting process.

It is what deploy/ runs as the SDK-harness sidecar of Flink TaskManagers (the image's `--worker_pool`
mode), here as a local process: Beam's `worker_pool_main` serves the EXTERNAL environment, and a portable
runner (Prism) asks it to start an SDK worker process per environment of a job and hands that worker every
bundle. The submitter then only submits, waits and reads the metrics, as it does against a cluster.

The pool starts each worker through worker_boot.py (what Beam's `boot` does in the image: the job's
pipeline options from the runner's provision service), with this interpreter, so the workers import this
project and its dependencies. They inherit the pool's environment, the salt (SUNBIRD_ENCRYPTION_KEY) and
the report store's credentials (AZURE_STORAGE_CONNECTION_STRING) included, and write under a `--staging`
that the submitter shares (on this machine: any local folder; else a container).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class WorkerPool:
    """`with WorkerPool(log_path) as pool:` a pool listening on loopback; `pool.pipeline_args()` points a
    portable runner at it. Stopping it stops the workers it started (they are in its process group)."""

    def __init__(self, log_path: str | os.PathLike, port: int | None = None, start_timeout: float = 60.0):
        self.log_path, self.port, self._start_timeout = Path(log_path), port or free_port(), start_timeout
        self._process: subprocess.Popen | None = None

    def pipeline_args(self) -> list[str]:
        return ["--environment_type=EXTERNAL", f"--environment_config=localhost:{self.port}"]

    def start(self) -> WorkerPool:
        # The pool runs one executable, with boot's flags: a script that runs worker_boot with this interpreter.
        boot = self.log_path.with_name(f"worker-boot-{self.port}")
        boot.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m programusers.local.worker_boot "$@"\n')
        boot.chmod(0o700)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={self.port}",
                 f"--container_executable={boot}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self._start_timeout
        while not _answers(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the SDK worker pool did not start on port {self.port}; see {self.log_path}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """SIGINT first: the pool then stops its workers itself (an atexit hook); what is left of its
        process group after STOP_TIMEOUT_S is killed."""
        if self._process is None:
            return
        group, self._process = self._process, None
        if group.poll() is None:
            group.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                group.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):  # workers the pool could not stop; the pool if it hung
            os.killpg(group.pid, signal.SIGKILL)
        group.wait()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
