"""The exhaust with its workers in another process, the shape production uses: Prism hands every bundle
to a Python SDK worker pool over the EXTERNAL environment (deploy/'s SDK-harness sidecar), the shards go
to a `--staging` both sides share, the submitter only merges, counts and publishes. Its reports must be
the bytes DirectRunner writes, and its counters the same."""
import pytest
from exhaust_cases import (
    exhaust_in_process,
    expected_counters,
    expected_csv,
    logged_counters,
    requests,
    status_rows,
    submit,
    unzipped,
)

from programusers.io import files
from programusers.local.worker_pool import WorkerPool
from programusers.report import progress

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def worker_pool(scenario, tmp_path_factory):
    # Started once the scenario fixture has set the salt: the workers inherit it, as a sidecar would.
    with WorkerPool(tmp_path_factory.mktemp("pool") / "worker-pool.log") as pool:
        yield pool


@pytest.mark.parametrize("name", ["district", "organisation"])
def test_worker_pool_writes_the_bytes_direct_runner_writes(name, scenario, worker_pool, pg_dsn,
                                                           tmp_path, monkeypatch):
    table = scenario.table
    # What the workers published as progress, read just before each request's staging is removed.
    published, remove_dir = [], files.remove_dir
    monkeypatch.setattr(files, "remove_dir", lambda path: (published.append(progress.published(path)),
                                                           remove_dir(path)))
    program, data, key, channel, users = requests(scenario)[name]
    ids, logs = {}, {}
    for engine, runner, args in (("direct", "DirectRunner", []),
                                 ("pool", "PrismRunner", worker_pool.pipeline_args())):
        ids[engine] = submit(pg_dsn, table, (program, data, key, channel))
        code, logs[engine] = exhaust_in_process(scenario, "--runner", runner, "--request-id", ids[engine],
                                                "--output", str(tmp_path / engine),
                                                "--staging", str(tmp_path / f"{engine}-staging"), *args)
        assert code == 0, logs[engine][-5:]

    rows = {engine: status_rows(pg_dsn, table, request_id) for engine, request_id in ids.items()}
    assert [row["status"] for row in rows.values()] == ["SUCCESS", "SUCCESS"]
    reports = {engine: unzipped(row["download_urls"][0], key) for engine, row in rows.items()}
    assert reports["pool"] == reports["direct"] == expected_csv(program, users)
    counted = {engine: logged_counters(logs[engine], ids[engine]) for engine in ids}
    assert counted["pool"] == counted["direct"]
    if name == "district":
        assert counted["pool"] == expected_counters(scenario)
    # The bundles ran in a worker the pool started, not in this process.
    assert "Starting worker with command" in worker_pool.log_path.read_text()
    # Yet the worker published its counts in the shared staging, where this process shows them from.
    steps = [step for step, _ in progress.STEPS]
    assert {step: n for step, n in published[-1].items() if step in steps} == {
        step: n for step, n in counted["pool"].items() if step in steps}
