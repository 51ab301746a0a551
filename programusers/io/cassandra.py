"""Cassandra access: sessions, and (see the sink and source DoFns) the tables we read and write."""
import re

from cassandra.cluster import Cluster, Session, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.policies import RoundRobinPolicy, TokenAwarePolicy

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")


def identifier(name: str, what: str = "identifier") -> str:
    """A keyspace or table name safe to place in CQL text (names are config, never user input)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid Cassandra {what}: {name!r}")
    return name


def connect(hosts: list[str], port: int = 9042, keyspace: str | None = None,
            request_timeout: float = 30.0) -> tuple[Cluster, Session]:
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
                               request_timeout=request_timeout)
    cluster = Cluster(hosts, port=port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return cluster, cluster.connect(keyspace)
