"""Connection settings: the local stack by default, the environment over that, a flag over both; a
secret's file is named, never its content (io/credentials.py reads it: tests/io/test_credentials.py)."""
from programusers.options import StoreOptions


def test_the_defaults_are_the_local_stack_and_the_environment_wins(monkeypatch, tmp_path):
    for name in ("PROGRAMUSERS_CASSANDRA_HOSTS", "PROGRAMUSERS_KAFKA_BOOTSTRAP", "PROGRAMUSERS_REDIS_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    options = StoreOptions([])
    assert options.cassandra_connection().hosts == ("127.0.0.1",)
    assert options.kafka_client().bootstrap == "127.0.0.1:9092"
    secret = tmp_path / "redis-password"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("PROGRAMUSERS_CASSANDRA_HOSTS", "c1,c2")
    monkeypatch.setenv("PROGRAMUSERS_REDIS_PASSWORD_FILE", str(secret))
    options = StoreOptions([])
    assert options.cassandra_connection().hosts == ("c1", "c2")
    assert options.redis_connection().password_file == str(secret)
    assert StoreOptions(["--cassandra-hosts=c3"]).cassandra_connection().hosts == ("c3",)  # a flag wins


def test_no_secret_is_a_flag_or_an_option():
    names = StoreOptions([]).get_all_options(current_only=True)
    assert not [n for n in names if "password" in n and not n.endswith("password_file")]
