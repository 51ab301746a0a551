"""A program manager's whole round trip over HTTP, on the real stack: submit through the API, the exhaust
produces the report into the object store (Azurite), read hands out a signed link, and the zip fetched
through it opens to the expected report."""
import json
import urllib.request

import pytest
from api_client import call, serve, token
from exhaust_cases import district, enrollment, exhaust_in_process, expected_csv, f, unzipped
from test_model_config import raw

from programusers import schema
from programusers.api.app import ApiSettings
from programusers.api.audit import LinkAudit
from programusers.api.tokens import TokenVerifier
from programusers.io import postgres
from programusers.local import azurite
from programusers.model_config import load_model_config
from programusers.report.request_store import RequestStore
from programusers.report.store import ReportStore, StoreEndpoints

pytestmark = pytest.mark.services


def test_submit_read_download_and_open_through_the_api(scenario, pg_dsn, table, azure_container, keys_dir,
                                                       tmp_path):
    document = raw()
    document["modelParams"].update(store="azure", container=azure_container)
    config_path = tmp_path / "model-config.json"
    config_path.write_text(json.dumps(document))
    config = load_model_config(document)
    audit = f"{table}_audit"
    settings = ApiSettings(verifier=TokenVerifier(keys_dir), requests=RequestStore(pg_dsn, table),
                           audit=LinkAudit(pg_dsn, audit), config=config, endpoints=StoreEndpoints(azure=azurite.ENDPOINT),
                           store=ReportStore.resolve(config, endpoints=StoreEndpoints(azure=azurite.ENDPOINT)))
    with postgres.session(pg_dsn) as connection:
        schema.init_postgres(connection, table, audit)
    server, thread, api = serve(settings)
    try:
        program = scenario.a
        body = {"request": {"tag": program.id, "dataset": "program-user-exhaust", "encryptionKey": "Api-Zip-1",
                            "datasetConfig": {"type": "program-user-exhaust", "params": enrollment(
                                f("user_locations['district_id']", "=", "d-ana"), program=program)}}}
        status, answer = call(f"{api}/request/submit", "POST", body, user_token=token())
        assert status == 200, answer
        request_id = answer["result"]["requestId"]

        code, logs = exhaust_in_process(scenario, "--job-request-table", table, "--config", str(config_path),
                                        "--azure-blob-endpoint", azurite.ENDPOINT)
        assert code == 0, logs[-5:]

        status, answer = call(f"{api}/request/read/{program.id}?requestId={request_id}", user_token=token())
        job = answer["result"]
        assert status == 200 and job["status"] == "SUCCESS", answer
        (link,) = job["downloadUrls"]
        assert link.startswith(f"{azurite.ENDPOINT}/{azure_container}/ml_reports/program-user-exhaust/{request_id}_")
        report = tmp_path / link.split("?", 1)[0].rsplit("/", 1)[1]
        with urllib.request.urlopen(link, timeout=30) as download:
            report.write_bytes(download.read())
        assert unzipped(report, "Api-Zip-1") == expected_csv(program, scenario.members(program, district("d-ana")))
        (entry,) = LinkAudit(pg_dsn, audit).entries(request_id=request_id)
        assert (entry["user_id"], entry["channel"]) == ("u-manager", "ch-1")
        with urllib.request.urlopen(f"{api}/health", timeout=30) as answer:
            assert json.loads(answer.read())["checks"] == {"postgres": "ok", "store": "ok"}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
