"""The local stack's S3 server (SeaweedFS, scripts/stack): the development identity scripts/stack gives it
(local only, no secret) and its endpoint."""
from programusers.io.s3 import S3Account
from programusers.model_config import DEFAULT_STORAGE_VARIABLES

ACCESS_KEY = "programusers-dev"
SECRET_KEY = "programusers-dev-secret"
ENDPOINT = "http://127.0.0.1:8333"
DEVELOPMENT_ACCOUNT = S3Account(ACCESS_KEY, SECRET_KEY, ENDPOINT)


def environment() -> dict:
    """The variables holding the development identity, where the model config's storageKeyConfig and
    storageSecretConfig look by default for the s3 store (the platform's names)."""
    key_variable, secret_variable = DEFAULT_STORAGE_VARIABLES["s3"]
    return {key_variable: ACCESS_KEY, secret_variable: SECRET_KEY}
