"""A report store that cannot take the report, on the stack's real Azure Blob (Azurite) and S3 (SeaweedFS)
servers: a wrong key, a missing container or bucket, a store that does not answer. Each fails the request
for a later run, says why without the key, and leaves nothing in the store."""
from dataclasses import dataclass

import pytest
from exhaust_cases import blob_names, exhaust_in_process, object_keys, status_rows, submit_district

from programusers.local import azurite, seaweedfs

pytestmark = pytest.mark.services


@dataclass(frozen=True)
class Store:
    fixture: str  # the container's or bucket's fixture
    endpoint_flag: str
    endpoint: str
    secret_variable: str
    secret: str
    refused: str
    missing: str
    names: object  # what the container or bucket holds

    def flags(self, name: str, kind: str, endpoint: str | None = None) -> list[str]:
        return ["--store", kind, "--container", name, self.endpoint_flag, endpoint or self.endpoint]


STORES = {
    "azure": Store("azure_container", "--azure-blob-endpoint", azurite.ENDPOINT, "azure_storage_secret", azurite.KEY,
                   "the storage account devstoreaccount1 refused our credentials",
                   "the container {}-gone does not exist in the storage account devstoreaccount1", blob_names),
    "s3": Store("s3_bucket", "--s3-endpoint", seaweedfs.ENDPOINT, "aws_storage_secret", seaweedfs.SECRET_KEY,
                "the S3 store refused our credentials", "the bucket {}-gone does not exist", object_keys),
}
WRONG_SECRET = "d3Jvbmcga2V5IGZvciB0aGUgZGV2ZWxvcG1lbnQgYWNjb3VudA=="  # base64, as an Azure key is


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("case", ["wrong key", "no container", "store down"])
def test_a_store_that_cannot_take_the_report_fails_the_request_for_a_later_run(
        kind, case, request, scenario, pg_dsn, table, monkeypatch):
    store = STORES[kind]
    name = request.getfixturevalue(store.fixture)
    request_id = submit_district(pg_dsn, table, scenario)
    flags, message = store.flags(name, kind), f"the report store ({kind}) is unreachable"
    if case == "wrong key":
        monkeypatch.setenv(store.secret_variable, WRONG_SECRET)
        message = store.refused
    elif case == "no container":
        flags, message = store.flags(f"{name}-gone", kind), store.missing.format(name)
    else:  # nothing listens on port 1
        flags = store.flags(name, kind, endpoint=store.endpoint.rsplit(":", 1)[0] + ":1")
    code, logs = exhaust_in_process(scenario, "--job-request-table", table, *flags, "--max-store-outage", "3")
    row = status_rows(pg_dsn, table, request_id)
    assert code == 0 and (row["status"], row["iteration"], row["err_message"]) == ("FAILED", 1, message)
    assert store.names(name) == []
    assert not [line for line in logs if store.secret in line or WRONG_SECRET in line or "AccountKey" in line]
