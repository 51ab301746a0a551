"""Redis: a connection config and a transform that reads hashes by key, in pipelined batches.

Nothing here knows about users or reports (transforms/report.py says which hashes and fields). The
password is never held by the config (which travels with the pipeline graph): it is read where the
client is made, from `password_file` (a mounted Secret) or the environment.
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from programusers import progress, settings

Unavailable = redis.RedisError
PASSWORD_ENV = "PROGRAMUSERS_REDIS_PASSWORD"
# A read that hits a restart or a dropped connection is tried again: 0.25, 0.5, 1, 2, 4 s apart (about 8 s
# in all), then the error goes up and the caller decides (the exhaust waits for the cache, bounded).
READ_RETRIES = 5


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

    def client(self, retries: int = READ_RETRIES, timeout: float | None = None) -> redis.Redis:
        timeout = self.timeout if timeout is None else timeout
        return redis.Redis(host=self.host, port=self.port, db=self.db, username=self.username,
                           password=settings.secret(self.password_file, PASSWORD_ENV),
                           ssl=self.tls or bool(self.tls_ca), ssl_ca_certs=self.tls_ca,
                           decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
                           retry=Retry(ExponentialBackoff(cap=4.0, base=0.25), retries),
                           retry_on_error=[redis.ConnectionError, redis.TimeoutError])

    def ping(self) -> None:
        """Raises Unavailable when the server does not answer (or refuses us) within a few seconds."""
        with self.client(retries=0, timeout=5.0) as connection:
            connection.ping()

    def describe(self) -> str:
        """For logs: where, never how to log in."""
        return f"{self.host}:{self.port}/{self.db}{' (TLS)' if self.tls or self.tls_ca else ''}"


class _ReadHashesFn(beam.DoFn):
    """Reads a batch of hashes in one pipelined round trip (no transaction: plain reads)."""

    def __init__(self, connection: RedisConnection, key_prefix: str, fields: tuple[str, ...], found_counter: str):
        self._connection, self._key_prefix, self._fields = connection, key_prefix, fields
        self._found = progress.counter(self.__class__, found_counter)

    def setup(self):
        self._client = self._connection.client()

    def process(self, ids: list[str]):
        pipe = self._client.pipeline(transaction=False)
        for id_ in ids:
            pipe.hmget(self._key_prefix + id_, self._fields)  # only the fields asked for
        for id_, values in zip(ids, pipe.execute()):
            if any(v is not None for v in values):  # HMGET gives all None for a missing key
                self._found.inc()
                yield id_, {f: v for f, v in zip(self._fields, values) if v is not None}

    def teardown(self):
        if client := getattr(self, "_client", None):  # setup may have failed before connecting
            client.close()


class ReadFromRedisHashes(beam.PTransform):
    """ids -> (id, {field: value}) for the hashes found at `key_prefix` + id; missing ones are left out.

    Reads `batch_size` keys per pipelined round trip (HMGET of `fields` only); counts the hashes found as
    `found_counter`. Transient errors are retried by the client (READ_RETRIES)."""

    def __init__(self, connection: RedisConnection, key_prefix: str, fields: tuple[str, ...], batch_size: int = 500,
                 found_counter: str = "hashes_found"):
        super().__init__()
        self.lookup_fn = _ReadHashesFn(connection, key_prefix, tuple(fields), found_counter)  # a batch -> hashes
        self._batch_size = batch_size

    def expand(self, ids):
        return (ids
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "LookUp" >> beam.ParDo(self.lookup_fn))
