"""The password zip around a report: the password, AES-256 by default, ZipCrypto for old unzip tools."""
import io
import shutil
import subprocess
import zipfile
import zlib
from datetime import datetime

import pytest
import pyzipper

from programusers.crypto import PlatformCipher
from programusers.report.archive import PasswordZip, encrypted_member, zip_password

CIPHER = PlatformCipher("unit-salt")
CSV = "User UUID,Name\r\nu1,'Zoë, \"Z\"'\r\n".encode() * 200
WHEN = datetime(2024, 2, 29, 23, 59, 58)


def test_password_is_the_decrypted_key_or_the_key_as_given():
    assert zip_password(CIPHER.encrypt("s3cret"), CIPHER) == "s3cret"
    assert zip_password("s3cret", CIPHER) == "s3cret"
    assert zip_password(PlatformCipher("other-salt").encrypt("s3cret"), CIPHER) != "s3cret"


class Unseekable(io.RawIOBase):
    def __init__(self):
        self.buffer = io.BytesIO()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(data)


def zipped(zip_crypto, seekable=True, password="pässword"):
    raw = io.BytesIO() if seekable else Unseekable()
    with encrypted_member(raw, PasswordZip(password, "R1_20240229.csv", zip_crypto), when=WHEN, size=len(CSV)) as member:
        for start in range(0, len(CSV), 1000):
            member.write(CSV[start:start + 1000])
    return (raw if seekable else raw.buffer).getvalue()


def refuses_a_wrong_password(archive, member):
    # The format checks a password against one byte of the key (ZipCrypto; AES: two), so a wrong one gets
    # past that check 1 time in 256 (65,536) and fails later, in inflate or the CRC/HMAC check (CI saw it).
    with pytest.raises((RuntimeError, zlib.error, zipfile.BadZipFile)):
        archive.read(member, pwd=b"wrong")


@pytest.mark.parametrize("seekable", [True, False])
def test_aes_zip_opens_with_the_password_only(seekable):
    data = zipped(zip_crypto=False, seekable=seekable)
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        (info,) = archive.infolist()
        assert info.filename == "R1_20240229.csv" and info.date_time == (2024, 2, 29, 23, 59, 58)
        assert archive.read(info, pwd="pässword".encode()) == CSV
        refuses_a_wrong_password(archive, info)
    with zipfile.ZipFile(io.BytesIO(data)) as archive, pytest.raises(NotImplementedError):
        archive.read("R1_20240229.csv", pwd=b"x")  # the standard library cannot read AES: it is encrypted


@pytest.mark.parametrize("seekable", [True, False])
def test_zip_crypto_opens_with_standard_tools(seekable, tmp_path):
    data = zipped(zip_crypto=True, seekable=seekable)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("R1_20240229.csv", pwd="pässword".encode()) == CSV
        refuses_a_wrong_password(archive, "R1_20240229.csv")
    if shutil.which("unzip"):
        (tmp_path / "r.zip").write_bytes(data)
        out = subprocess.run(["unzip", "-P", "pässword", "-p", str(tmp_path / "r.zip")], capture_output=True)
        assert out.returncode == 0 and out.stdout == CSV
