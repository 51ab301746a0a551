import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from programusers.crypto import SALT_ENV_VAR, DecryptionError, PlatformCipher

SALT = "testsalt"
# Produced by JDK 17 (javax.crypto "AES", java.util.Base64 MIME encoder, 76 chars, "\n").
JAVA_CIPHERTEXT = (
    "oJSLfUmBgBRdErYUjxGZLBKkDeYUVg+OFEHQlDsT3z8oC6pXCYGUCaf0O2Fj4gSuVQRtm/Leqimq\n"
    "zZpau0+jqSVubIbWJrAEdxN1k0MvNfhSbmI3n0HYo0GrQwJGwNrnT6a+wzaAmCWueMEdPmZuRg=="
)

cipher = PlatformCipher(SALT)


@pytest.mark.parametrize("value", ["user@example.com", "9876543210"])
def test_round_trip(value):
    encrypted = cipher.encrypt(value)
    assert encrypted != value
    assert cipher.decrypt(encrypted) == value


def test_matches_the_java_implementation():
    assert cipher.encrypt("user@example.com") == JAVA_CIPHERTEXT
    assert cipher.decrypt(JAVA_CIPHERTEXT) == "user@example.com"


def test_long_values_are_chunked_at_76_chars_without_trailing_newline():
    value = "a-rather-long-address." * 5 + "@example.com"
    encrypted = cipher.encrypt(value)
    lines = encrypted.split("\n")
    assert len(lines) > 1
    assert all(len(line) == 76 for line in lines[:-1]) and 0 < len(lines[-1]) <= 76
    assert cipher.decrypt(encrypted) == value


def test_wrong_salt_fails_cleanly():
    encrypted = PlatformCipher("another-salt").encrypt("user@example.com")
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(encrypted)
    assert "user@example.com" not in str(info.value)
    assert encrypted not in str(info.value)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda text: text.replace("\n", "\r\n") + "\r\n",  # Apache commons chunked style
        lambda text: text.replace("\n", "\\n"),  # escaped newlines as stored in some caches
        lambda text: text.replace("\n", ""),  # no line breaks at all
        lambda text: "\\n".join(text[i:i + 10] for i in range(0, len(text), 10)) + "\n",
    ],
)
def test_line_breaks_and_escapes_are_ignored(mangle):
    assert cipher.decrypt(mangle(JAVA_CIPHERTEXT)) == "user@example.com"


@pytest.mark.parametrize("garbage", ["", "not base64 at all!", "QUJD", "A" * 24, JAVA_CIPHERTEXT[:-8]])
def test_garbage_fails_with_decryption_error(garbage):
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(garbage)
    assert not garbage or garbage not in str(info.value)


def test_from_env(monkeypatch):
    monkeypatch.setenv(SALT_ENV_VAR, SALT)
    assert PlatformCipher.from_env().decrypt(JAVA_CIPHERTEXT) == "user@example.com"
    monkeypatch.delenv(SALT_ENV_VAR)
    with pytest.raises(RuntimeError, match=SALT_ENV_VAR):
        PlatformCipher.from_env()


@settings(max_examples=200)
@given(salt=st.text(max_size=40), value=st.text())
def test_round_trip_any_text(salt, value):
    c = PlatformCipher(salt)
    assert c.decrypt(c.encrypt(value)) == value
