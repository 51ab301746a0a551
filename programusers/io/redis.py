"""Redis: a connection config and a lookup handler (io/lookups.py's shape) that reads hashes by key, a
batch in one pipelined round trip.

Nothing here knows about users or reports (pipelines/exhaust.py says which hashes and fields). The
password is never held by the config (which travels with the pipeline graph): it is read where the
client is made, from `password_file` (a mounted Secret) or the environment.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import HasDisplayData
from redis.backoff import EqualJitterBackoff
from redis.retry import Retry

from programusers.io.backoff import count_wait
from programusers.io.credentials import read_secret

__all__ = ["RedisConnection", "RedisHashHandler", "Unavailable"]

Unavailable = (redis.RedisError,)  # as every io/ module says it: the errors of a store that is down
PASSWORD_ENV = "PROGRAMUSERS_REDIS_PASSWORD"
# A read that hits a restart or a dropped connection is tried again after steps of 0.5, 1, 2, 4 and 4 s,
# each wait its step's second half random (io/backoff.py's rule: 5.75 to 11.5 s in all), then the error
# goes up and the caller decides (the exhaust waits for the cache, bounded).
READ_RETRIES = 5
METRICS_NAMESPACE = "programusers.redis"
_THROTTLED = Metrics.counter(METRICS_NAMESPACE, "redis_throttled_ms")


class _WaitTotal:
    """The seconds a client's retries waited, summed where they happen and taken where they are counted: a
    Beam counter counts on a bundle's thread only, and a lookup may run on a thread of its own."""

    def __init__(self):
        self._lock, self._seconds = threading.Lock(), 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._seconds += seconds

    def take(self) -> float:
        """The seconds waited since the last call."""
        with self._lock:
            seconds, self._seconds = self._seconds, 0.0
        return seconds

    def __deepcopy__(self, memo):
        return self  # redis.Redis copies its Retry and backoff: the copy must add to this total


class _SummedBackoff(EqualJitterBackoff):
    """redis-py's jittered backoff, each wait it gives (the client sleeps it next) added to `total`."""

    def __init__(self, total: _WaitTotal | None = None):
        super().__init__(cap=4.0, base=0.25)
        self._total = total

    def compute(self, failures: int) -> float:
        seconds = super().compute(failures)
        if self._total is not None:
            self._total.add(seconds)
        return seconds


@dataclass(frozen=True)
class RedisConnection:
    """Where a Redis is and how to log in: host, port, db, ACL user, password file, TLS."""
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password_file: str | None = None  # else $PROGRAMUSERS_REDIS_PASSWORD, else none
    tls: bool = False
    tls_ca: str | None = None  # a CA file turns TLS on
    timeout: float = 10.0

    def client(self, retries: int = READ_RETRIES, timeout: float | None = None,
               waits: _WaitTotal | None = None) -> redis.Redis:
        timeout = self.timeout if timeout is None else timeout
        return redis.Redis(host=self.host, port=self.port, db=self.db, username=self.username,
                           password=read_secret(self.password_file, PASSWORD_ENV),
                           ssl=self.tls or bool(self.tls_ca), ssl_ca_certs=self.tls_ca,
                           decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
                           retry=Retry(_SummedBackoff(waits), retries),
                           retry_on_error=[redis.ConnectionError, redis.TimeoutError])

    def ping(self) -> None:
        """Raises Unavailable when the server does not answer (or refuses us) within a few seconds."""
        with self.client(retries=0, timeout=5.0) as connection:
            connection.ping()

    def describe(self) -> str:
        """For logs: where, never how to log in."""
        return f"{self.host}:{self.port}/{self.db}{' (TLS)' if self.tls or self.tls_ca else ''}"


class RedisHashHandler(HasDisplayData):
    """A lookup handler (io/lookups.py): a batch of ids -> {id: {field: value}} for the hashes found at
    `key_prefix` + id (HMGET of `fields` only, in one pipelined round trip, no transaction: plain reads).
    A missing hash, or one without any of the fields, is left out. Transient errors are retried by the
    client (READ_RETRIES, counted as redis_throttled_ms).

    Args:
      connection: where the Redis is and how to log in.
      key_prefix: what precedes an id in its hash's key.
      fields: the fields to read.
    """

    def __init__(self, connection: RedisConnection, key_prefix: str, fields: tuple[str, ...]):
        self._connection, self._key_prefix, self._fields = connection, key_prefix, tuple(fields)
        self._client, self._waits = None, None

    def display_data(self):
        return {"redis": self._connection.describe(), "key_prefix": self._key_prefix, "fields": ",".join(self._fields)}

    def __enter__(self) -> RedisHashHandler:
        self._waits = _WaitTotal()
        self._client = self._connection.client(waits=self._waits)
        return self

    def count_throttled(self) -> None:
        """Adds the client's retry waits since the last call to redis_throttled_ms; call it on a bundle's
        thread (a Beam counter counts only there)."""
        count_wait(_THROTTLED, self._waits.take())

    def __call__(self, ids: list[str]) -> dict[str, dict]:
        pipe = self._client.pipeline(transaction=False)
        for id_ in ids:
            pipe.hmget(self._key_prefix + id_, self._fields)
        return {id_: {f: v for f, v in zip(self._fields, values) if v is not None}
                for id_, values in zip(ids, pipe.execute())
                if any(v is not None for v in values)}  # HMGET gives all None for a missing key

    def __exit__(self, *exc_info) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None, "_waits": None}
