"""The platform's field encryption (SPEC section 4).

AES-128/ECB/PKCS#5 under a fixed key, three rounds; each round prefixes the secret salt
(``sunbird_encryption_key``) to its plaintext and Base64-encodes its output MIME style.
The AES key is public, so the salt prefix is the only thing that tells a wrong salt apart.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad

_KEY = b"ThisAsISerceKtey"
_ROUNDS = 3
SALT_ENV_VAR = "SUNBIRD_ENCRYPTION_KEY"
# Whitespace, plus the two-character escape "\n" that stored values sometimes hold.
_NOISE = re.compile(r"\\n|\s")


class DecryptionError(ValueError):
    """A value could not be decrypted. The message never carries the value itself."""


class PlatformCipher:
    def __init__(self, salt: str):
        self._salt = salt.encode("utf-8")
        # ECB keeps no state between blocks or calls, so one cipher object serves every value (creating
        # one per round was a third of a decrypt's time).
        self._aes = AES.new(_KEY, AES.MODE_ECB)

    @classmethod
    def from_env(cls) -> PlatformCipher:
        salt = os.environ.get(SALT_ENV_VAR)
        if not salt:
            raise RuntimeError(f"environment variable {SALT_ENV_VAR} is not set")
        return cls(salt)

    def encrypt(self, text: str) -> str:
        value = text.encode("utf-8")
        for _ in range(_ROUNDS):
            encrypted = self._aes.encrypt(pad(self._salt + value, AES.block_size))
            # encodebytes chunks at 76 chars with "\n" but also ends with one; the platform's don't.
            value = base64.encodebytes(encrypted).rstrip(b"\n")
        return value.decode("ascii")

    def decrypt(self, text: str) -> str:
        value = text
        try:
            for _ in range(_ROUNDS):
                # strict_mode: what b64decode(validate=True) checks, without its regex pass.
                raw = binascii.a2b_base64(_NOISE.sub("", value), strict_mode=True)
                plain = unpad(self._aes.decrypt(raw), AES.block_size)
                if not plain.startswith(self._salt):
                    raise DecryptionError("decrypted value does not carry the expected salt")
                value = plain[len(self._salt):].decode("utf-8")
        except DecryptionError:
            raise
        except ValueError as exc:  # bad Base64, block size, padding or UTF-8
            raise DecryptionError(f"value is not a valid platform ciphertext ({type(exc).__name__})") from None
        return value
