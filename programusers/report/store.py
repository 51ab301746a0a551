"""Where reports are published (SPEC §6), and the links that hand them out.

The model config says where, as the platform's model configs do: `store` (local, azure, s3; gcloud refused),
`container`, `storageKeyConfig` / `storageSecretConfig` (the environment variables holding the account and
its key) and `key` (the reports' prefix). Flags override the store, the container and the whole output
path; secrets come from the environment only. A store the run cannot use is refused, never ignored.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from programusers.io import azure_blob, files, s3
from programusers.io.azure_blob import AzureBlobAccount
from programusers.io.s3 import S3Account
from programusers.model_config import DEFAULT_STORAGE_VARIABLES, ReportConfig

# channel.data_exhaust.expiryMins on the platform.
DEFAULT_LINK_EXPIRY = timedelta(minutes=30)
_SCHEMES = {"azfs": "azure", "s3": "s3", "gs": "gcloud"}
BEAM_AZURE_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"  # read by Beam's azfs when its options name no account


class StoreConfigError(ValueError):
    """Store settings that cannot work together; the message names the setting to change."""


def store_of(path: str) -> str:
    """The store a Beam path is on: local, azure, s3 or gcloud (another scheme is refused)."""
    if files.is_local(path):
        return "local"
    scheme = path.split("://", 1)[0]
    if scheme not in _SCHEMES:
        raise StoreConfigError(f"{scheme}:// is not a report store: use a local path, azfs:// or s3://")
    return _SCHEMES[scheme]


class StoreRefused(Exception):
    """The store refused our credentials; the message names the store, never the key."""


class StoreMissing(Exception):
    """The container or bucket does not exist."""


# A store that does not answer: worth a wait and another try.
UNAVAILABLE = (*azure_blob.Unavailable, *s3.Unavailable)


def _credentials(config: ReportConfig, kind: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """The store's account (or access key id) and key, from the variables the model config names."""
    defaults = DEFAULT_STORAGE_VARIABLES[kind]
    account_variable = config.storage_key_config or defaults[0]
    key_variable = config.storage_secret_config or defaults[1]
    account, key = environ.get(account_variable), environ.get(key_variable)
    if not (account and key):
        raise StoreConfigError(f"the {kind} store needs its account in ${account_variable} and its key in "
                               f"${key_variable} (the model config's storageKeyConfig and storageSecretConfig)")
    return account, key


@dataclass(frozen=True)
class StoreEndpoints:
    """The object stores' service endpoints where they are not the public clouds' (Azurite, SeaweedFS, a
    private cloud): the --azure-blob-endpoint and --s3-endpoint flags."""
    azure: str | None = None
    s3: str | None = None


@dataclass(frozen=True)
class ReportStore:
    """Where one run publishes its reports: `output` (a Beam path) on the store `kind`, and for an object
    store the `account` that uploads and signs and the `container` (or bucket)."""
    kind: str
    output: str
    account: AzureBlobAccount | S3Account | None = None
    container: str | None = None

    @classmethod
    def resolve(cls, config: ReportConfig, *, store: str | None = None, container: str | None = None,
                output: str | None = None, endpoints: StoreEndpoints = StoreEndpoints(),
                environ: Mapping[str, str] = os.environ) -> ReportStore:
        """The store of `config`, overridden by the flags given (`store`, `container`, `output`: a whole
        Beam path); raises StoreConfigError when they disagree or the store's credentials are missing."""
        kind = store or config.store
        if output and (found := store_of(output)) != kind:
            told = f"--store {store}" if store else f"the model config's store {config.store!r}"
            raise StoreConfigError(f"--output {output} is on the {found} store but {told} is {kind}: "
                                   f"pass --store {found} to publish there")
        if kind == "local":
            return cls("local", output or config.output_path)
        if kind == "gcloud":
            raise StoreConfigError("the gcloud store is not available in this build: its uploads and signed links "
                                   "were never run against a server here (see the README); use azure, s3 or local")
        name, key = _credentials(config, kind, environ)
        account = (AzureBlobAccount(name, key, endpoints.azure) if kind == "azure"
                   else S3Account(name, key, endpoints.s3))
        prefix = config.output_path.strip("/")
        if output:
            try:
                if kind == "azure":
                    found_account, container, _ = azure_blob.parse_path(output.rstrip("/") + "/x")
                    if found_account != name:
                        raise StoreConfigError(f"--output names the storage account {found_account}, but the "
                                               f"model config's storage variables hold the key of {name}")
                else:
                    container, _ = s3.parse_path(output.rstrip("/") + "/x")
            except ValueError as error:
                raise StoreConfigError(f"--output {output}: {error}") from None
        else:
            container = container or config.container
            if not container:
                raise StoreConfigError(f"the {kind} store needs a container: --container or the model config's")
            output = (f"azfs://{name}/{container}/{prefix}" if kind == "azure" else f"s3://{container}/{prefix}")
            output = output.rstrip("/")
        return cls(kind, output, account, container)

    def export_credentials(self, environ: MutableMapping[str, str] = os.environ) -> None:
        """Hands Beam's filesystem the account, for this process and the workers it starts (its staging):
        through the environment variables Beam's azfs and s3 read when their options name none. Never a
        pipeline option: a worker logs its options, and they travel to the runner; never argv. Workers
        elsewhere get them from their own environment, as they get the platform salt."""
        if isinstance(self.account, AzureBlobAccount):
            environ[BEAM_AZURE_VARIABLE] = self.account.connection_string()
        elif isinstance(self.account, S3Account):
            self.account.export(environ)

    @contextmanager
    def _answers(self):
        try:
            yield
        except (azure_blob.Refused, s3.Refused) as error:
            raise StoreRefused(str(error)) from None
        except (azure_blob.ContainerMissing, s3.BucketMissing) as error:
            raise StoreMissing(str(error)) from None

    def check(self) -> None:
        """Returns when the store takes reports; raises StoreRefused, StoreMissing or one of UNAVAILABLE."""
        with self._answers():
            if isinstance(self.account, AzureBlobAccount):
                self.account.check_container(self.container)
            elif isinstance(self.account, S3Account):
                self.account.check_bucket(self.container)

    def upload(self, local: str, destination: str) -> None:
        """Puts a finished local file at `destination` on this object store, whole or not at all."""
        with self._answers():
            self.account.upload(local, destination)

    def describe(self) -> str:
        endpoint = getattr(self.account, "blob_endpoint", None) or getattr(self.account, "endpoint", None)
        return f"{self.output} (endpoint {endpoint})" if endpoint else self.output


def signed_link(location: str, config: ReportConfig, *, expires_in: timedelta = DEFAULT_LINK_EXPIRY,
                endpoints: StoreEndpoints = StoreEndpoints(), environ: Mapping[str, str] = os.environ) -> str:
    """A read-only link to the report at `location` (as download_urls holds it) that expires after
    `expires_in`, signed now and never stored, with the key that the model config's storage variables hold:
    an Azure SAS with read permission only, or an S3 presigned GET. A local report's link is its path."""
    kind = store_of(location)
    if kind == "local":
        return location
    store = ReportStore.resolve(config, store=kind, output=location, endpoints=endpoints, environ=environ)
    return store.account.read_url(location, expires_in)
