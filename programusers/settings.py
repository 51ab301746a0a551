"""Every setting the commands take from the environment, with its default, declared once.

A setting is read when asked for (`settings.KAFKA_BOOTSTRAP`), not when this module is imported, so a
variable exported later (a test, a ConfigMap's environment) counts. Flags take precedence
(options.py); the defaults point at the local stack (scripts/stack), so the same commands run against
real clusters by exporting the variables or passing the flags. Secrets are not settings: passwords, the
platform salt and zip passwords are read where they are used (io/credentials, crypto, the submit
command), never held here or in flags.
"""
import os
from pathlib import Path

from programusers import schema

# setting -> (environment variable, default: the local stack's, or None for unset)
_SETTINGS = {
    "CASSANDRA_HOSTS": ("PROGRAMUSERS_CASSANDRA_HOSTS", "127.0.0.1"),
    "CASSANDRA_PORT": ("PROGRAMUSERS_CASSANDRA_PORT", "9042"),
    "CASSANDRA_LOCAL_DC": ("PROGRAMUSERS_CASSANDRA_LOCAL_DC", None),
    "CASSANDRA_USERNAME": ("PROGRAMUSERS_CASSANDRA_USERNAME", None),
    "CASSANDRA_PASSWORD_FILE": ("PROGRAMUSERS_CASSANDRA_PASSWORD_FILE", None),
    "CASSANDRA_TLS_CA": ("PROGRAMUSERS_CASSANDRA_TLS_CA", None),
    "CASSANDRA_TLS_CERT": ("PROGRAMUSERS_CASSANDRA_TLS_CERT", None),
    "CASSANDRA_TLS_KEY": ("PROGRAMUSERS_CASSANDRA_TLS_KEY", None),
    "CASSANDRA_TLS_NO_HOSTNAME_CHECK": ("PROGRAMUSERS_CASSANDRA_TLS_NO_HOSTNAME_CHECK", None),
    "CASSANDRA_PROTOCOL_VERSION": ("PROGRAMUSERS_CASSANDRA_PROTOCOL_VERSION", None),
    "PROGRAMS_KEYSPACE": ("PROGRAMUSERS_PROGRAMS_KEYSPACE", "sunbird_programs"),
    "CONSENT_KEYSPACE": ("PROGRAMUSERS_CONSENT_KEYSPACE", "sunbird"),
    # Replication of keyspaces created by `programusers init`, as CQL map text.
    "REPLICATION": ("PROGRAMUSERS_CASSANDRA_REPLICATION", "{'class': 'SimpleStrategy', 'replication_factor': 1}"),
    "KAFKA_BOOTSTRAP": ("PROGRAMUSERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    "KAFKA_CONFIG_FILE": ("PROGRAMUSERS_KAFKA_CONFIG_FILE", None),
    "ENV_NAME": ("PROGRAMUSERS_ENV", "local"),
    "POSTGRES_DSN": ("PROGRAMUSERS_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=programusers"),
    "JOB_REQUEST_TABLE": ("PROGRAMUSERS_JOB_REQUEST_TABLE", schema.JOB_REQUEST_TABLE),
    "REDIS_HOST": ("PROGRAMUSERS_REDIS_HOST", "127.0.0.1"),
    "REDIS_PORT": ("PROGRAMUSERS_REDIS_PORT", "6379"),
    "REDIS_DB": ("PROGRAMUSERS_REDIS_DB", None),  # unset: the model config's sparkUserDbRedisIndex
    "REDIS_USERNAME": ("PROGRAMUSERS_REDIS_USERNAME", None),
    "REDIS_PASSWORD_FILE": ("PROGRAMUSERS_REDIS_PASSWORD_FILE", None),
    "REDIS_TLS_CA": ("PROGRAMUSERS_REDIS_TLS_CA", None),
    # The Azure blob service of the report store (Azurite locally); unset: the public cloud's.
    "AZURE_BLOB_ENDPOINT": ("PROGRAMUSERS_AZURE_BLOB_ENDPOINT", None),
    # The S3 API of the report store when it is not AWS's (the stack's SeaweedFS locally).
    "S3_ENDPOINT": ("PROGRAMUSERS_S3_ENDPOINT", None),
    # The request API: the folder of the token keys (<kid>.pem), the tokens' issuer, the links' audit table.
    "TOKEN_KEYS": ("PROGRAMUSERS_TOKEN_KEYS", None),
    "TOKEN_ISSUER": ("PROGRAMUSERS_TOKEN_ISSUER", None),
    "LINK_AUDIT_TABLE": ("PROGRAMUSERS_LINK_AUDIT_TABLE", schema.LINK_AUDIT_TABLE),
    # Beam's Java expansion service for cross-language Kafka IO (scripts/stack runs one locally whose
    # transforms execute in a Java SDK-harness worker pool).
    "EXPANSION_SERVICE": ("PROGRAMUSERS_EXPANSION_SERVICE", "127.0.0.1:8097"),
    # Where scripts/stack fetch puts Prism and the jars (runners/ looks there).
    "CACHE": ("PROGRAMUSERS_CACHE", str(Path.home() / ".cache" / "programusers")),
    # Where scripts/stack keeps the local stack's data, pids and the secure profile's files.
    "STACK_DIR": ("PROGRAMUSERS_STACK_DIR", str(Path(__file__).resolve().parents[1] / ".stack")),
}
_NUMBERS = {"CASSANDRA_PORT", "CASSANDRA_PROTOCOL_VERSION", "REDIS_PORT", "REDIS_DB"}
_SWITCHES = {"CASSANDRA_TLS_NO_HOSTNAME_CHECK"}  # on when set to anything


def env(name: str, default: str | None = None) -> str | None:
    """$name, else `default` (a blank value counts as unset)."""
    return os.environ.get(name) or default


def variable(setting: str) -> str:
    """The environment variable of `setting`, for help texts and messages."""
    return _SETTINGS[setting][0]


def default(setting: str) -> str | None:
    """The value of `setting` when its variable is unset."""
    return _SETTINGS[setting][1]


def exported(setting: str) -> str | None:
    """The value of `setting`'s variable, None when it is unset (a caller with a default of its own)."""
    return env(variable(setting))


def __getattr__(name: str):
    if name not in _SETTINGS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = env(variable(name), default(name))
    if name in _SWITCHES:
        return bool(value)
    return int(value) if name in _NUMBERS and value is not None else value


def stack_dir() -> Path:
    return Path(__getattr__("STACK_DIR"))


def cassandra_hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]
