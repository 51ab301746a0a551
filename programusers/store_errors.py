"""What went wrong with a store, in words for an operator: which store, and whether it is unreachable or
refused the login. Never the error's own text, which may quote a value, a query or a connection string."""
from __future__ import annotations

import re

CASSANDRA, REDIS, POSTGRES = "Cassandra", "the user cache (Redis)", "PostgreSQL"
# libpq's words when the server turns the login down (a wrong password; pg_hba.conf, e.g. TLS required).
_REFUSALS = re.compile(r"authentication failed|pg_hba\.conf rejects|no pg_hba\.conf entry")
UNREACHABLE, REFUSED = "is unreachable", "refused the login (check the user and its password)"


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def describe(error: BaseException) -> str | None:
    """"<store> is unreachable" or "<store> refused the login ...", for the store clients we use; None
    for any other error."""
    import psycopg2
    import redis
    from cassandra.cluster import NoHostAvailable

    from programusers.io.cassandra import refused

    for cause in _chain(error):
        if isinstance(cause, NoHostAvailable):
            return f"{CASSANDRA} {REFUSED if refused(cause) else UNREACHABLE}"
        if isinstance(cause, redis.AuthenticationError):
            return f"{REDIS} {REFUSED}"
        if isinstance(cause, redis.RedisError):
            return f"{REDIS} {UNREACHABLE}"
        if isinstance(cause, psycopg2.OperationalError):
            return f"{POSTGRES} {REFUSED if _REFUSALS.search(str(cause)) else UNREACHABLE}"
    return None


def refused_login(message: str) -> bool:
    return message.endswith(REFUSED)
