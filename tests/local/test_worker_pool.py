"""The exhaust with its workers in another process, the shape production uses: Prism hands every bundle
to a Python SDK worker pool over the EXTERNAL environment (deploy/'s SDK-harness sidecar), the shards go
to a `--staging` both sides share, the submitter only merges, counts and publishes. Its reports must be
the bytes DirectRunner writes, and its counters the same."""
import pytest
from apache_beam.io.filesystems import FileSystems
from exhaust_cases import (
    blob_names,
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
from programusers.local import azurite
from programusers.local.worker_pool import WorkerPool
from programusers.report import progress
from programusers.report.store import BEAM_AZURE_VARIABLE

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def worker_pool(scenario, tmp_path_factory):
    # Started once the scenario fixture has set the salt: the workers inherit it, and the report store's
    # account, as a sidecar would.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BEAM_AZURE_VARIABLE, azurite.DEVELOPMENT_ACCOUNT.connection_string())
        pool = WorkerPool(tmp_path_factory.mktemp("pool") / "worker-pool.log").start()
    try:
        yield pool
    finally:
        pool.stop()


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


def test_workers_elsewhere_stage_sealed_shards_on_azurite_and_the_report_is_the_same(
        scenario, worker_pool, pg_dsn, table, azure_container, tmp_path):
    """Production's shape on the platform's store: workers that do not share this disk write their sealed
    shards to a container, the submitter merges them from there and publishes the report beside them."""
    program, data, key, channel, users = requests(scenario)["district"]
    request_id = submit(pg_dsn, table, (program, data, key, channel))
    staging = f"azfs://{azurite.ACCOUNT}/{azure_container}/staging"
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, "--runner", "PrismRunner",
                                    *worker_pool.pipeline_args(), "--store", "azure", "--container", azure_container,
                                    "--azure-blob-endpoint", azurite.ENDPOINT, "--staging", staging)
    assert code == 0, logs[-5:]
    row = status_rows(pg_dsn, table, request_id)
    (location,) = row["download_urls"]
    assert row["status"] == "SUCCESS" and location.startswith(f"azfs://{azurite.ACCOUNT}/{azure_container}/")
    report = tmp_path / location.rsplit("/", 1)[1]
    with FileSystems.open(location) as published:
        report.write_bytes(published.read())
    assert unzipped(report, key) == expected_csv(program, users)
    assert logged_counters(logs, request_id) == expected_counters(scenario)
    # Only the report is left in the container: the staged shards went with the request.
    assert blob_names(azure_container) == [location.split(f"/{azure_container}/", 1)[1]]
