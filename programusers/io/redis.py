"""Redis access: the platform's user cache, one hash per user at ``user:<userid>``."""
import apache_beam as beam
import redis
from apache_beam.metrics import Metrics
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

Unavailable = redis.RedisError
# A read that hits a restart or a dropped connection is tried again: 0.25, 0.5, 1, 2, 4 s apart (about 8 s
# in all), then the error goes up and the exhaust decides (it waits for the cache, bounded, and re-runs).
READ_RETRIES = 5


def client(host: str, port: int, db: int, timeout: float = 10.0, retries: int = READ_RETRIES) -> redis.Redis:
    return redis.Redis(host=host, port=port, db=db, decode_responses=True, socket_timeout=timeout,
                       socket_connect_timeout=timeout,
                       retry=Retry(ExponentialBackoff(cap=4.0, base=0.25), retries),
                       retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def ping(host: str, port: int, db: int) -> None:
    """Raises Unavailable when the server does not answer within a few seconds."""
    with client(host, port, db, timeout=5.0, retries=0) as connection:
        connection.ping()


class _ReadHashesFn(beam.DoFn):
    """Reads a batch of user hashes in one pipelined round trip (no transaction: plain reads)."""

    def __init__(self, host: str, port: int, db: int, fields: tuple[str, ...]):
        self._host, self._port, self._db, self._fields = host, port, db, fields
        self._found = Metrics.counter(self.__class__, "profiles_found")

    def setup(self):
        self._client = client(self._host, self._port, self._db)

    def process(self, user_ids: list[str]):
        pipe = self._client.pipeline(transaction=False)
        for user_id in user_ids:
            # Only the fields the report uses: the hash holds more of the user's data than we need.
            pipe.hmget(f"user:{user_id}", self._fields)
        for user_id, values in zip(user_ids, pipe.execute()):
            if any(v is not None for v in values):  # HMGET gives all None for a missing key
                self._found.inc()
                yield user_id, {f: v for f, v in zip(self._fields, values) if v is not None}

    def teardown(self):
        if client := getattr(self, "_client", None):  # setup may have failed before connecting
            client.close()


class ReadUserHashes(beam.PTransform):
    """user ids -> (user_id, {field: value}) for the users found in the cache; others are left out."""

    def __init__(self, host: str, port: int, db: int, fields: tuple[str, ...], batch_size: int = 500):
        super().__init__()
        self._fn = _ReadHashesFn(host, port, db, fields)
        self._batch_size = batch_size

    def expand(self, user_ids):
        return (user_ids
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "LookUp" >> beam.ParDo(self._fn))
