"""Where reports are published (SPEC §6), and the links that hand them out.

The model config says where, as the platform's model configs do: `store` (local, azure, s3, gcloud),
`container`, `storageKeyConfig` / `storageSecretConfig` (the environment variables holding the account and
its key) and `key` (the reports' prefix). Flags override the store, the container and the whole output
path; secrets come from the environment only. A store the run cannot use is refused, never ignored.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta

from programusers.io import azure_blob, files
from programusers.io.azure_blob import AzureBlobAccount
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
        raise StoreConfigError(f"{scheme}:// is not a report store: use a local path or azfs://")
    return _SCHEMES[scheme]


@dataclass(frozen=True)
class ReportStore:
    """Where one run publishes its reports: `output` (a Beam path) on the store `kind`, and for Azure the
    `account` that uploads and signs."""
    kind: str
    output: str
    account: AzureBlobAccount | None = None
    container: str | None = None

    @classmethod
    def resolve(cls, config: ReportConfig, *, store: str | None = None, container: str | None = None,
                output: str | None = None, azure_endpoint: str | None = None,
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
        if kind != "azure":
            raise StoreConfigError(f"the {kind} store is not available in this build: its uploads and signed "
                                   "links were never run against a server here (see the README); use azure or local")
        defaults = DEFAULT_STORAGE_VARIABLES[kind]
        account_variable = config.storage_key_config or defaults[0]
        key_variable = config.storage_secret_config or defaults[1]
        name, key = environ.get(account_variable), environ.get(key_variable)
        if not (name and key):
            raise StoreConfigError(f"the azure store needs the storage account's name in ${account_variable} and "
                                   f"its key in ${key_variable} (the model config's storageKeyConfig and "
                                   "storageSecretConfig)")
        account = AzureBlobAccount(name, key, azure_endpoint)
        if output:
            try:
                found_account, container, _ = azure_blob.parse_path(output.rstrip("/") + "/x")
            except ValueError as error:
                raise StoreConfigError(f"--output {output}: {error}") from None
            if found_account != name:
                raise StoreConfigError(f"--output names the storage account {found_account}, but "
                                       f"${account_variable} holds the key of {name}")
        else:
            container = container or config.container
            if not container:
                raise StoreConfigError("the azure store needs a container: --container or the model config's")
            output = f"azfs://{name}/{container}/{config.output_path.strip('/')}".rstrip("/")
        return cls("azure", output, account, container)

    def export_credentials(self, environ: MutableMapping[str, str] = os.environ) -> None:
        """Hands Beam's azfs the account, for this process and the workers it starts (its staging): through
        the environment variable Beam reads when its options name none. Never a pipeline option: a
        worker logs its options, and they travel to the runner; never argv. Workers elsewhere get it from
        their own environment, as they get the platform salt."""
        if self.account:
            environ[BEAM_AZURE_VARIABLE] = self.account.connection_string()

    def check(self) -> None:
        """Returns when the store takes reports; raises azure_blob's Refused, ContainerMissing or
        Unavailable errors for Azure."""
        if self.account:
            self.account.check_container(self.container)

    def upload(self, local: str, destination: str) -> None:
        """Puts a finished local file at `destination`, whole or not at all."""
        if self.account:
            self.account.upload(local, destination)
        else:
            files.upload(local, destination)

    def describe(self) -> str:
        return self.output if not self.account else f"{self.output} (endpoint {self.account.blob_endpoint})"


def signed_link(location: str, config: ReportConfig, *, expires_in: timedelta = DEFAULT_LINK_EXPIRY,
                azure_endpoint: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """A read-only link to the report at `location` (as download_urls holds it) that expires after
    `expires_in`, signed now and never stored: an Azure SAS with read permission only, signed with the
    account key that the model config's storage variables hold. A local report's link is its path."""
    kind = store_of(location)
    if kind == "local":
        return location
    store = ReportStore.resolve(config, store=kind, output=location, azure_endpoint=azure_endpoint, environ=environ)
    return store.account.read_url(location, expires_in)
