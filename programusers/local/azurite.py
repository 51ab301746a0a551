"""The local stack's Azure Blob service (Azurite, scripts/stack): its development account, whose name and
key Microsoft publishes for every Azurite (no secret), and its endpoint."""
from programusers.io.azure_blob import AzureBlobAccount

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENDPOINT = f"http://127.0.0.1:10000/{ACCOUNT}"
DEVELOPMENT_ACCOUNT = AzureBlobAccount(ACCOUNT, KEY, ENDPOINT)


def environment(key_variable: str = "azure_storage_key", secret_variable: str = "azure_storage_secret") -> dict:
    """The variables that name the development account and hold its key, as the model config's
    storageKeyConfig and storageSecretConfig name them (the platform's defaults)."""
    return {key_variable: ACCOUNT, secret_variable: KEY}
