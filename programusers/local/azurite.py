"""The local stack's Azure Blob service (Azurite, scripts/stack): its development account, whose name and
key Microsoft publishes for every Azurite (no secret), and its endpoint."""
from programusers.io.azure_blob import AzureBlobAccount
from programusers.model_config import DEFAULT_STORAGE_VARIABLES

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENDPOINT = f"http://127.0.0.1:10000/{ACCOUNT}"
DEVELOPMENT_ACCOUNT = AzureBlobAccount(ACCOUNT, KEY, ENDPOINT)


def environment() -> dict:
    """The variables that name the development account and hold its key, where the model config's
    storageKeyConfig and storageSecretConfig look by default (the platform's names)."""
    account_variable, key_variable = DEFAULT_STORAGE_VARIABLES["azure"]
    return {account_variable: ACCOUNT, key_variable: KEY}
