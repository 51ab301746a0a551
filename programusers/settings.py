"""Connection settings shared by the CLI and the pipelines' options.

Every value has an environment variable whose default points at the local stack (scripts/stack), so
the same commands run against real clusters by exporting the variables or passing the flags.
"""
import os
from pathlib import Path


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def stack_dir() -> Path:
    """Where scripts/stack keeps the local stack's data, pids and the secure profile's files."""
    return Path(os.environ.get("PROGRAMUSERS_STACK_DIR") or Path(__file__).resolve().parents[1] / ".stack")


CASSANDRA_HOSTS = env("PROGRAMUSERS_CASSANDRA_HOSTS", "127.0.0.1")
CASSANDRA_PORT = int(env("PROGRAMUSERS_CASSANDRA_PORT", "9042"))
PROGRAMS_KEYSPACE = env("PROGRAMUSERS_PROGRAMS_KEYSPACE", "sunbird_programs")
CONSENT_KEYSPACE = env("PROGRAMUSERS_CONSENT_KEYSPACE", "sunbird")
# Replication of keyspaces created by `programusers init`, as CQL map text.
REPLICATION = env("PROGRAMUSERS_CASSANDRA_REPLICATION", "{'class': 'SimpleStrategy', 'replication_factor': 1}")

KAFKA_BOOTSTRAP = env("PROGRAMUSERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
ENV_NAME = env("PROGRAMUSERS_ENV", "local")

POSTGRES_DSN = env("PROGRAMUSERS_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=programusers")

REDIS_HOST = env("PROGRAMUSERS_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(env("PROGRAMUSERS_REDIS_PORT", "6379"))


def cassandra_hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]

# Beam's Java expansion service for cross-language Kafka IO (scripts/stack runs one locally whose
# transforms execute in a Java SDK-harness worker pool).
EXPANSION_SERVICE = env("PROGRAMUSERS_EXPANSION_SERVICE", "127.0.0.1:8097")
