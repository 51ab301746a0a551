"""Connection settings: Kafka client properties given once (Java names) for KafkaIO and the Python
clients, and secrets that come from files or the environment, never from a flag."""
import pytest

from programusers.io.credentials import read_secret
from programusers.io.kafka import KafkaClientConfig, read_properties
from programusers.options import StoreOptions

SASL = ('security.protocol=SASL_SSL\n'
        '# a comment\n'
        'sasl.mechanism = SCRAM-SHA-512\n'
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n'
        '    username="reporter" password="s3cret=;x";\n'
        'ssl.truststore.type=PEM\n'
        'ssl.truststore.location=/etc/ca.pem\n')


def test_a_properties_file_is_read_as_java_reads_it(tmp_path):
    path = tmp_path / "kafka.properties"
    path.write_text(SASL)
    assert read_properties(str(path)) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                            'username="reporter" password="s3cret=;x";',
        "ssl.truststore.type": "PEM", "ssl.truststore.location": "/etc/ca.pem"}


def test_kafkaio_gets_the_properties_and_the_python_clients_their_librdkafka_names(tmp_path):
    path = tmp_path / "kafka.properties"
    path.write_text(SASL)
    client = KafkaClientConfig.load("k1:9093,k2:9093", str(path), ["client.id=programusers", "sasl.mechanism=PLAIN"])
    assert client.java(acks="all") == {
        "bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": read_properties(str(path))["sasl.jaas.config"], "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/ca.pem", "client.id": "programusers", "acks": "all"}
    assert client.python() == {
        "bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "reporter", "sasl.password": "s3cret=;x", "ssl.ca.location": "/etc/ca.pem",
        "client.id": "programusers"}
    assert "s3cret" not in client.describe() and client.describe() == "k1:9093,k2:9093 (SASL_SSL/PLAIN)"
    assert "s3cret" not in repr(client)  # a pickled config holds the file's path, not the secret


@pytest.mark.parametrize("overrides,message", [
    (["security.protocol"], "expected KEY=VALUE"),
    (["ssl.truststore.type=JKS", "ssl.truststore.location=/etc/ts.jks"], "read a PEM CA file"),
    (["sasl.jaas.config=com.example.KerberosLogin required;"], "username/password login"),
])
def test_properties_the_python_clients_cannot_use_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        KafkaClientConfig.load("k:9092", None, overrides).python()


def test_a_missing_properties_file_fails_at_once(tmp_path):
    with pytest.raises(OSError):
        KafkaClientConfig.load("k:9092", str(tmp_path / "missing.properties"))


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
    assert read_secret(str(secret), "UNUSED") == "from-a-file"  # its line end is no part of it
    assert StoreOptions(["--cassandra-hosts=c3"]).cassandra_connection().hosts == ("c3",)  # a flag wins
