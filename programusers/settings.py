"""Every connection setting the commands take from the environment, with its local-stack default,
declared once.

A setting is read when asked for (`settings.KAFKA_BOOTSTRAP`), not when this module is imported, so a
variable exported later (a test, a ConfigMap's environment) counts. Flags take precedence
(options.py); the defaults point at the local stack (scripts/stack), so the same commands run against
real clusters by exporting the variables or passing the flags.
"""
import os
from pathlib import Path

# setting -> (environment variable, local-stack default)
_SETTINGS = {
    "CASSANDRA_HOSTS": ("PROGRAMUSERS_CASSANDRA_HOSTS", "127.0.0.1"),
    "CASSANDRA_PORT": ("PROGRAMUSERS_CASSANDRA_PORT", "9042"),
    "PROGRAMS_KEYSPACE": ("PROGRAMUSERS_PROGRAMS_KEYSPACE", "sunbird_programs"),
    "CONSENT_KEYSPACE": ("PROGRAMUSERS_CONSENT_KEYSPACE", "sunbird"),
    # Replication of keyspaces created by `programusers init`, as CQL map text.
    "REPLICATION": ("PROGRAMUSERS_CASSANDRA_REPLICATION", "{'class': 'SimpleStrategy', 'replication_factor': 1}"),
    "KAFKA_BOOTSTRAP": ("PROGRAMUSERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    "ENV_NAME": ("PROGRAMUSERS_ENV", "local"),
    "POSTGRES_DSN": ("PROGRAMUSERS_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=programusers"),
    "REDIS_HOST": ("PROGRAMUSERS_REDIS_HOST", "127.0.0.1"),
    "REDIS_PORT": ("PROGRAMUSERS_REDIS_PORT", "6379"),
    # Beam's Java expansion service for cross-language Kafka IO (scripts/stack runs one locally whose
    # transforms execute in a Java SDK-harness worker pool).
    "EXPANSION_SERVICE": ("PROGRAMUSERS_EXPANSION_SERVICE", "127.0.0.1:8097"),
}
_NUMBERS = {"CASSANDRA_PORT", "REDIS_PORT"}


def env(name: str, default: str | None = None) -> str | None:
    """$name, else `default` (a blank value counts as unset)."""
    return os.environ.get(name) or default


def __getattr__(name: str):
    if name not in _SETTINGS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    variable, default = _SETTINGS[name]
    value = env(variable, default)
    return int(value) if name in _NUMBERS else value


def stack_dir() -> Path:
    """Where scripts/stack keeps the local stack's data, pids and the secure profile's files."""
    return Path(os.environ.get("PROGRAMUSERS_STACK_DIR") or Path(__file__).resolve().parents[1] / ".stack")


def cassandra_hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]
