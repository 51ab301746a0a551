"""The request API's test client side: signing keys, tokens minted and forged as an attacker would, a real
uvicorn on a loopback port, and a plain HTTP client."""
import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request

import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from programusers.api.app import ApiSettings, create_app


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


SIGNING, STRANGER = new_key(), new_key()


def token(user="u-manager", *, roles=(("PROGRAM_MANAGER", "ch-1"),), key=SIGNING, kid="k1", expires_in=600,
          **claims) -> str:
    payload = {"sub": f"f:federation-1:{user}", "iat": int(time.time()),
               "roles": [{"role": role, "scope": [{"organisationId": org}]} for role, org in roles], **claims}
    if expires_in is not None:
        payload["exp"] = int(time.time()) + expires_in
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(user="u-manager") -> str:
    header, payload = {"alg": "none", "typ": "JWT"}, {"sub": user, "exp": int(time.time()) + 600}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256_with_the_public_key(user="u-manager") -> str:
    """The classic key-confusion forgery: HS256 'signed' with the RSA public key as the HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    payload = {"sub": user, "exp": int(time.time()) + 600,
               "roles": [{"role": "PROGRAM_MANAGER", "scope": [{"organisationId": "ch-1"}]}]}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(public_pem(SIGNING), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def serve(settings: ApiSettings):
    """A real uvicorn on a port the system picks; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def call(url, method="GET", body=None, *, user_token=None, channel="ch-1", user=None, raw=None):
    headers = {"Content-Type": "application/json"}
    if user_token:
        headers["x-authenticated-user-token"] = user_token
    if channel:
        headers["X-Channel-ID"] = channel
    if user:
        headers["X-Authenticated-Userid"] = user
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory):
    """The folder of token keys the served API trusts."""
    folder = tmp_path_factory.mktemp("token-keys")
    (folder / "k1.pem").write_bytes(public_pem(SIGNING))
    return folder


