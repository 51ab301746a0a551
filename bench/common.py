"""Shared by the benchmark scripts: the machine description, a peak-RSS sampler, medians, JSON/Markdown out."""
from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from programusers import settings

RESULTS = Path(__file__).resolve().parent / "results"
# The local stack's servers, found by the port they listen on, for their RSS.
STORE_PORTS = {9042: "cassandra", 9092: "kafka", 6379: "redis", 8099: "java-sdk-worker-pool",
               8097: "expansion-service"}
UNAVAILABLE = {
    "FlinkRunner": "not measured: Beam's Flink job-server jar is not served by the reachable Maven Central (404)",
    "SparkRunner": "not measured: Beam's Spark job-server jar is not served by the reachable Maven Central (404)",
}


def machine(session=None, redis_client=None) -> dict:
    import apache_beam
    import cassandra

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    facts = {"nproc": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu": cpu,
             "python": platform.python_version(), "beam": apache_beam.__version__,
             "cassandra_driver": cassandra.__version__}
    if session is not None:
        facts["cassandra"] = session.execute("SELECT release_version FROM system.local").one()[0]
    if redis_client is not None:
        facts["redis"] = redis_client.info("server")["redis_version"]
    return facts


def store_processes() -> dict[str, int]:
    """pid of each local-stack server we can see listening."""
    found = {}
    for connection in psutil.net_connections("inet"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port in STORE_PORTS and connection.pid:
            found[STORE_PORTS[connection.laddr.port]] = connection.pid
    return found


class PeakRss:
    """Samples the RSS of this process, its descendants (Prism, SDK workers) and the stores every 0.5 s
    (cheaply: it shares the CPU with what it measures);
    keeps each one's peak in MiB. Descendants are grouped by command name, e.g. "prism-2.73.0"."""

    def __init__(self, interval: float = 0.5, parent: bool = True):
        """parent=False: the work runs in child processes; this one (the bench's driver) is left out."""
        self._interval, self._stop, self._parent = interval, threading.Event(), parent
        self._stores = store_processes()
        self.peaks: dict[str, float] = {}

    def _label(self, process: psutil.Process) -> str:
        if process.pid == os.getpid():
            return "bench (submitter, in-process workers)"
        if process.ppid() == os.getpid() and "multiprocessing" in " ".join(process.cmdline()):
            return "submitter (in-process workers)"
        for name, pid in self._stores.items():
            if pid == process.pid:
                return f"store:{name}"
        try:
            cmd = process.cmdline()
        except psutil.Error:
            return process.name()
        if any("sdk_worker" in part or "worker_pool_main" in part for part in cmd):
            return f"python sdk worker {process.pid}"
        return f"{Path(cmd[0]).name if cmd else process.name()} {process.pid}"

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            processes = ([me] if self._parent else []) + me.children(recursive=True)
            processes += [psutil.Process(pid) for pid in self._stores.values() if psutil.pid_exists(pid)]
            for process in processes:
                try:  # a process may end (or linger as a zombie) between the listing and these
                    rss = process.memory_info().rss / 2**20
                    label = self._label(process)
                except psutil.Error:
                    continue
                self.peaks[label] = max(self.peaks.get(label, 0.0), rss)
            self._stop.wait(self._interval)

    def __enter__(self):
        # What the bench process held before (its own test data): the run's share is peak minus this.
        self.start_mib = round(psutil.Process().memory_info().rss / 2**20, 1)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        """Peaks rounded; worker processes of one kind summed as well (they run at the same time)."""
        peaks = {k: round(v, 1) for k, v in sorted(self.peaks.items())}
        if self._parent:
            peaks["bench process before the run"] = self.start_mib
        workers = [v for k, v in self.peaks.items() if k.startswith("python sdk worker")]
        if workers:
            peaks["python sdk workers (sum of peaks)"] = round(sum(workers), 1)
        return peaks


@contextmanager
def timed(into: dict, name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        into[name] = round(time.perf_counter() - started, 3)


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(facts: dict) -> str:
    return (f"Machine: {facts['nproc']} vCPU ({facts['cpu']}), {facts['memory_gb']} GiB RAM; Python {facts['python']}, "
            f"Beam {facts['beam']}, Cassandra {facts.get('cassandra', '?')} (driver {facts['cassandra_driver']})"
            + (f", Redis {facts['redis']}" if "redis" in facts else "") + "; the stores run on the same machine.")


def create_topics(names: list[str], partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP})
    topics = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    for future in admin.create_topics(topics).values():
        future.result()


def delete_topics(names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP})  # alive until the futures resolve
    for future in admin.delete_topics(names).values():
        future.result()


def __getattr__(name: str):
    # LOCAL_CASSANDRA on first use: programusers.io imports Beam, which the Beam-free baseline script
    # (exhaust_script.py) must not load, as its memory is measured.
    if name == "LOCAL_CASSANDRA":
        from programusers.io.cassandra import CassandraConnection

        return CassandraConnection(tuple(settings.cassandra_hosts(settings.CASSANDRA_HOSTS)), settings.CASSANDRA_PORT)
    raise AttributeError(name)
