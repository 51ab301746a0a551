"""Azure Blob Storage: an account's connection for Beam's `azfs://` filesystem, whole-object uploads and
read-only signed URLs. Nothing here knows about reports.

Beam's azfs (2.73) reads and writes blobs well, but its `copy` names the public cloud's host whatever the
endpoint (so it fails on Azurite and sovereign clouds), its `exists` raises for a missing blob, and its
writer sends what it holds when an error closes it. So publishing and signing use the Azure SDK here.
TLS: the SDK (requests) trusts the CA bundle named by REQUESTS_CA_BUNDLE, as Beam's workers do.
"""
from __future__ import annotations

import functools
import os
import re
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

__all__ = ["AzureBlobAccount", "ContainerMissing", "Refused", "Unavailable", "parse_path"]

_PATH = re.compile(r"azfs://([a-z0-9]{3,24})/([a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9])/(.+)")
# Connection failures and server-side errors: worth a wait and another try.
Unavailable = (ServiceRequestError, ServiceResponseError)


class Refused(Exception):
    """The account refused our credentials (a wrong key or an expired signature)."""


class ContainerMissing(Exception):
    """The container does not exist in the account."""


@functools.lru_cache(maxsize=8)
def _client(account: AzureBlobAccount) -> BlobServiceClient:
    # Fail fast: the caller's own retries (with the store's outage limit) decide how long to wait.
    return BlobServiceClient(account.blob_endpoint, credential={"account_name": account.name,
                                                                "account_key": account.key},
                             retry_total=2, connection_timeout=10, read_timeout=120)


def parse_path(path: str) -> tuple[str, str, str]:
    """(account, container, blob) of `azfs://account/container/blob`; ValueError for any other path."""
    if not (match := _PATH.fullmatch(path)):
        raise ValueError("an Azure Blob path is azfs://<account>/<container>/<blob>")
    return match[1], match[2], match[3]


@dataclass(frozen=True)
class AzureBlobAccount:
    """A storage account reached with its key.

    Args:
      name: the account's name.
      key: the account's key (base64), from the environment: never a flag.
      endpoint: the blob service's URL, e.g. https://127.0.0.1:10100/<name> for Azurite; default the public
        cloud's https://<name>.blob.core.windows.net.
    """
    name: str
    key: str
    endpoint: str | None = None

    @property
    def blob_endpoint(self) -> str:
        return (self.endpoint or f"https://{self.name}.blob.core.windows.net").rstrip("/")

    def connection_string(self) -> str:
        """For Beam's azfs (it holds the key: never argv, never a log)."""
        return (f"AccountName={self.name};AccountKey={self.key};BlobEndpoint={self.blob_endpoint};"
                f"DefaultEndpointsProtocol={self.blob_endpoint.split(':', 1)[0]}")

    def client(self) -> BlobServiceClient:
        """This account's client, made once (it keeps its connections; it is thread-safe)."""
        return _client(self)

    def _blob(self, path: str):
        account, container, blob = parse_path(path)
        if account != self.name:
            raise ValueError(f"{path} is not in the storage account {self.name}")
        return self.client().get_blob_client(container, blob)

    @contextmanager
    def _answers(self, container: str):
        """The service's refusals as Refused and ContainerMissing (their text names no blob or key)."""
        try:
            yield
        except ClientAuthenticationError:
            raise Refused(f"the storage account {self.name} refused our credentials") from None
        except ResourceNotFoundError as error:
            if error.error_code == "ContainerNotFound" or error.error_code is None:
                raise ContainerMissing(f"the container {container} does not exist in the storage account "
                                       f"{self.name}") from None
            raise
        except HttpResponseError as error:
            if error.status_code == 403:
                raise Refused(f"the storage account {self.name} refused our credentials") from None
            raise

    def check_container(self, container: str) -> None:
        """Returns when `container` exists and our key opens it; raises Refused, ContainerMissing or one of
        Unavailable."""
        with self._answers(container):
            self.client().get_container_client(container).get_container_properties()

    def create_container(self, container: str) -> None:
        """Creates `container` (private: no anonymous access) unless it exists."""
        with suppress(ResourceExistsError):
            self.client().create_container(container)

    def upload(self, local: str, path: str) -> None:
        """Uploads the local file to `path` (azfs://), replacing it. The blob appears whole or not at all: a
        large one goes up as blocks that only the final commit makes visible."""
        blob = self._blob(path)
        with open(local, "rb") as source, self._answers(blob.container_name):
            blob.upload_blob(source, length=os.fstat(source.fileno()).st_size, overwrite=True, max_concurrency=2)

    def read_url(self, path: str, expires_in: timedelta) -> str:
        """A URL that reads the blob at `path` (azfs://) and nothing else until `expires_in` from now: a
        service SAS with read permission only, signed with the account key (no call to the service)."""
        blob = self._blob(path)
        token = generate_blob_sas(self.name, blob.container_name, blob.blob_name, account_key=self.key,
                                  permission=BlobSasPermissions(read=True),
                                  expiry=datetime.now(UTC) + expires_in,
                                  protocol="https" if self.blob_endpoint.startswith("https:") else "https,http")
        return f"{blob.url}?{token}"

    def display_data(self) -> dict:
        return {"account": self.name, "endpoint": self.blob_endpoint}

