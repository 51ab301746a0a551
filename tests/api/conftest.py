"""The request API's tests: the folder of token keys the served API trusts."""
import pytest
from http_api import SIGNING, public_pem


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("token-keys")
    (folder / "k1.pem").write_bytes(public_pem(SIGNING))
    return folder


