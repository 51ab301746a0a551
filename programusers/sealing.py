"""Sealed files: what a pipeline's workers write so that only the process that started the pipeline can
read it back (SPEC §6: no decrypted PII at rest in clear text, on any filesystem).

The submitting process makes a key pair for its run (`RunKey`) and gives the workers only the public half,
which is no secret: it may sit in the pipeline's graph and options. Each sealed file gets a fresh AES-256
key from an X25519 agreement between a key pair made for that file alone and the run's public key (ECIES,
with HKDF-SHA256); the file's own public key heads it. Its content follows as frames, each AES-GCM
encrypted and authenticated with the frame's number as its nonce, so frames cannot be altered, swapped or
replayed between files; a file cut short loses whole frames, which its reader's row count catches.
The private half never leaves the submitter's memory and dies with it.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

__all__ = ["RunKey", "SealedFileError", "SealedWriter", "open_sealed"]

MAGIC = b"PUSEAL1\n"
_KEY_SIZE = 32  # a raw X25519 public key
_TAG = 16
_FRAME = struct.Struct(">I")  # the length of a frame's ciphertext and tag


class SealedFileError(Exception):
    """A sealed file that is not one, was altered, or was sealed for another run (no content is quoted)."""


def _file_key(static_private: ECC.EccKey, static_public: ECC.EccKey, ephemeral_private=None, ephemeral_public=None):
    kdf = lambda secret: HKDF(secret, _KEY_SIZE, b"programusers sealed file", SHA256)  # noqa: E731
    if ephemeral_private is not None:
        return key_agreement(static_pub=static_public, eph_priv=ephemeral_private, kdf=kdf)
    return key_agreement(static_priv=static_private, eph_pub=ephemeral_public, kdf=kdf)


def _nonce(frame: int) -> bytes:
    return frame.to_bytes(12, "big")


class RunKey:
    """A run's key pair: `public` (bytes, for the workers) and the private half, for `open_sealed`."""

    def __init__(self, private: ECC.EccKey | None = None):
        self._private = private or ECC.generate(curve="curve25519")

    @property
    def public(self) -> bytes:
        return self._private.public_key().export_key(format="raw")

    @property
    def private(self) -> ECC.EccKey:
        return self._private


class SealedWriter:
    """Seals frames for the holder of the run key whose public half is `public`, onto `out`."""

    def __init__(self, out: BinaryIO, public: bytes):
        ephemeral = ECC.generate(curve="curve25519")
        self._key = _file_key(None, import_x25519_public_key(public), ephemeral_private=ephemeral)
        self._out, self._frame = out, 0
        head = MAGIC + ephemeral.public_key().export_key(format="raw")
        out.write(head)
        self.size = len(head)  # bytes written so far

    def write(self, data: bytes) -> None:
        """Seals `data` as the next frame."""
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=_nonce(self._frame))
        sealed, tag = cipher.encrypt_and_digest(data)
        self._out.write(_FRAME.pack(len(sealed) + _TAG) + sealed + tag)
        self._frame += 1
        self.size += _FRAME.size + len(sealed) + _TAG


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    while data and len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def open_sealed(stream: BinaryIO, key: RunKey) -> Iterator[bytes]:
    """The frames of a sealed file, each checked; raises SealedFileError at the first that fails."""
    head = _read_exactly(stream, len(MAGIC) + _KEY_SIZE)
    if len(head) != len(MAGIC) + _KEY_SIZE or not head.startswith(MAGIC):
        raise SealedFileError("not a sealed file")
    try:
        ephemeral = import_x25519_public_key(head[len(MAGIC):])
    except ValueError:
        raise SealedFileError("a damaged header") from None
    file_key, frame = _file_key(key.private, None, ephemeral_public=ephemeral), 0
    while prefix := _read_exactly(stream, _FRAME.size):
        if len(prefix) < _FRAME.size:
            raise SealedFileError(f"frame {frame + 1} cut short")
        (size,) = _FRAME.unpack(prefix)
        body = _read_exactly(stream, size)
        if size < _TAG or len(body) != size:
            raise SealedFileError(f"frame {frame + 1} cut short")
        cipher = AES.new(file_key, AES.MODE_GCM, nonce=_nonce(frame))
        try:
            yield cipher.decrypt_and_verify(body[:-_TAG], body[-_TAG:])
        except ValueError:
            raise SealedFileError(f"frame {frame + 1} does not open with this run's key") from None
        frame += 1
