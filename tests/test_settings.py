"""Settings come from the environment when asked for, else the local stack's defaults."""
import pytest

from programusers import settings


def test_a_setting_is_read_when_asked_for_and_a_blank_variable_is_unset(monkeypatch):
    monkeypatch.delenv("PROGRAMUSERS_REDIS_PORT", raising=False)
    assert settings.REDIS_PORT == 6379
    monkeypatch.setenv("PROGRAMUSERS_REDIS_PORT", "6390")
    assert settings.REDIS_PORT == 6390  # exported after the import: it counts
    monkeypatch.setenv("PROGRAMUSERS_REDIS_PORT", "")
    assert settings.REDIS_PORT == 6379
    monkeypatch.delenv("PROGRAMUSERS_REDIS_DB", raising=False)
    assert settings.REDIS_DB is None  # unset: the model config decides


def test_a_switch_is_on_when_set_to_anything(monkeypatch):
    monkeypatch.delenv("PROGRAMUSERS_CASSANDRA_TLS_NO_HOSTNAME_CHECK", raising=False)
    assert settings.CASSANDRA_TLS_NO_HOSTNAME_CHECK is False
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_TLS_NO_HOSTNAME_CHECK", "no")
    assert settings.CASSANDRA_TLS_NO_HOSTNAME_CHECK is True


def test_hosts_are_split_and_an_unknown_setting_is_an_error():
    assert settings.cassandra_hosts(" 10.0.0.1, ,10.0.0.2 ") == ["10.0.0.1", "10.0.0.2"]
    assert settings.variable("KAFKA_BOOTSTRAP") == "PROGRAMUSERS_KAFKA_BOOTSTRAP"
    with pytest.raises(AttributeError, match="NO_SUCH_SETTING"):
        _ = settings.NO_SUCH_SETTING
