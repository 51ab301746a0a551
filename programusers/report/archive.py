"""The password-protected zip around a report: AES-256 (WinZip AE) by default, ZipCrypto on request.

ZipCrypto is weak and is only offered because old unzip tools (Info-ZIP unzip 6, Windows Explorer)
cannot open AES archives; pyzipper reads it but cannot write it, hence the small encrypter below.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import pyzipper
from pyzipper.zipfile_aes import BaseZipEncrypter

from programusers.crypto import DecryptionError, PlatformCipher

_DATA_DESCRIPTOR = 1 << 3  # general purpose flag bit 3: CRC and sizes follow the data


def zip_password(encryption_key: str, cipher: PlatformCipher) -> str:
    """The request's key decrypted with the platform cipher when it is platform-encrypted, else as given."""
    try:
        return cipher.decrypt(encryption_key)
    except DecryptionError:
        return encryption_key


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        table.append(crc)
    return table


class ZipCryptoEncrypter(BaseZipEncrypter):
    """Traditional PKWARE encryption (APPNOTE 6.1), streaming: the check byte is the high byte of the
    member's DOS time, which readers expect whenever bit 3 (data descriptor) is set."""

    _CRC = _crc_table()

    def __init__(self, password: bytes):
        self._keys = [0x12345678, 0x23456789, 0x34567890]
        self._check = 0
        for byte in password:
            self._update(byte)

    def _update(self, byte: int) -> None:
        keys, crc = self._keys, self._CRC
        keys[0] = (keys[0] >> 8) ^ crc[(keys[0] ^ byte) & 0xFF]
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = (keys[2] >> 8) ^ crc[(keys[2] ^ (keys[1] >> 24)) & 0xFF]

    def update_zipinfo(self, zipinfo) -> None:
        zipinfo.flag_bits |= _DATA_DESCRIPTOR
        self._check = (zipinfo.get_dostime() >> 8) & 0xFF

    def encryption_header(self) -> bytes:
        return self.encrypt(os.urandom(11) + bytes([self._check]))

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray(len(data))
        for i, byte in enumerate(data):
            k = self._keys[2] | 2
            out[i] = byte ^ (((k * (k ^ 1)) >> 8) & 0xFF)
            self._update(byte)
        return bytes(out)


class _ZipCryptoFile(pyzipper.ZipFile):
    def get_encrypter(self):
        return ZipCryptoEncrypter(self.pwd)


@dataclass(frozen=True)
class PasswordZip:
    """How a report is zipped: its password, the name of the CSV inside, and whether with legacy ZipCrypto
    (for old unzip tools) instead of AES-256."""
    password: str
    member: str
    zip_crypto: bool = False


@contextmanager
def encrypted_member(raw: BinaryIO, zipped: PasswordZip, *, when: datetime, size: int) -> Iterator[BinaryIO]:
    """A writable stream for the zip's only member, written to ``raw`` (which need not be seekable).
    ``size`` is the member's length or an upper bound of it, so ZIP64 is used only when needed."""
    password, name = zipped.password, zipped.member
    if zipped.zip_crypto:
        archive = _ZipCryptoFile(raw, "w", compression=pyzipper.ZIP_DEFLATED)
    else:
        archive = pyzipper.AESZipFile(raw, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES)
    archive.setpassword(password.encode("utf-8"))
    member = archive.zipinfo_cls(name, date_time=when.timetuple()[:6])
    member.compress_type = pyzipper.ZIP_DEFLATED
    member.file_size = size
    member.external_attr = 0o644 << 16
    with archive, archive.open(member, "w") as stream:
        yield stream
