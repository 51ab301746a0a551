"""What went wrong with a store, typed: which store, and whether it is unreachable or refused the login,
found from the store clients' exception types. Its words are for an operator and never quote the error's
own text, which may hold a value, a query or a connection string."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Store(StrEnum):
    CASSANDRA = "Cassandra"
    REDIS = "the user cache (Redis)"
    POSTGRES = "PostgreSQL"
    OBJECT_STORE = "the report store"


class Kind(StrEnum):
    UNREACHABLE = "is unreachable"
    REFUSED = "refused the login (check the user and its password)"


@dataclass(frozen=True)
class StoreProblem:
    store: Store
    kind: Kind

    def __str__(self) -> str:
        return f"{self.store} {self.kind}"


def classify(error: BaseException) -> StoreProblem | None:
    """The store problem behind `error` (or any error it was raised from), for the store clients we use;
    None for any other error."""
    import psycopg2
    import redis
    from cassandra.cluster import NoHostAvailable

    from programusers.io import postgres
    from programusers.io.backoff import causes
    from programusers.io.cassandra import refused

    for cause in causes(error):
        if isinstance(cause, NoHostAvailable):
            return StoreProblem(Store.CASSANDRA, Kind.REFUSED if refused(cause) else Kind.UNREACHABLE)
        if isinstance(cause, redis.AuthenticationError):
            return StoreProblem(Store.REDIS, Kind.REFUSED)
        # Only a lost or refused connection: a command error (WRONGTYPE, a full server) is not an outage.
        if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
            return StoreProblem(Store.REDIS, Kind.UNREACHABLE)
        if isinstance(cause, postgres.LoginRefused):
            return StoreProblem(Store.POSTGRES, Kind.REFUSED)
        if isinstance(cause, psycopg2.OperationalError):
            return StoreProblem(Store.POSTGRES, Kind.UNREACHABLE)
    return None
