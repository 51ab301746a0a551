"""The demo's request API: `programusers serve` on a port the system picks, a program manager's token signed
with a demo key pair kept under .stack/demo-api, and the HTTP calls a dashboard makes, each also printed as
the curl command that repeats it."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from programusers import settings

FOLDER = settings.stack_dir() / "demo-api"
KEY_ID = "demo"


def _signing_key() -> bytes:
    """The demo's private key (made once, 0600), its public half in FOLDER/keys/demo.pem for `serve`."""
    private = FOLDER / "signing.pem"
    if not private.exists():
        (FOLDER / "keys").mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private.touch(mode=0o600)
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        (FOLDER / "keys" / f"{KEY_ID}.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private.read_bytes()


def manager_token(user: str, channel: str, hours: int = 2) -> Path:
    """A PROGRAM_MANAGER token of `user` scoped to `channel`, written to FOLDER/token (0600); its path."""
    claims = {"sub": f"f:demo:{user}", "exp": int(time.time()) + hours * 3600,
              "roles": [{"role": "PROGRAM_MANAGER", "scope": [{"organisationId": channel}]}]}
    path = FOLDER / "token"
    path.touch(mode=0o600)
    path.write_text(jwt.encode(claims, _signing_key(), algorithm="RS256", headers={"kid": KEY_ID}))
    return path


class DemoApi:
    """`with DemoApi() as api:` the request API in a subprocess; `api.url`."""

    def __init__(self):
        _signing_key()
        self.url, self._process = "", None

    def __enter__(self) -> DemoApi:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "programusers", "serve", "--port", "0", "--token-keys", str(FOLDER / "keys")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self._process.stderr:  # its first lines say where it listens
            if found := re.search(r"listens on (http://\S+)", line):
                self.url = found[1]
                return self
        raise SystemExit("demo stopped: the request API did not start")

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)


def call(url: str, token: Path, channel: str, body: dict | None = None) -> dict:
    """The API's answer; prints the curl command that asks the same."""
    headers = {"x-authenticated-user-token": token.read_text(), "X-Channel-ID": channel,
               "Content-Type": "application/json"}
    curl = ["curl", "-s", url, "-H", f"x-authenticated-user-token: $(cat {token})", "-H", f"X-Channel-ID: {channel}"]
    if body is not None:
        curl += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    print("      $ " + " ".join(shlex.quote(part) if "$(" not in part else f'"{part}"' for part in curl))
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())
