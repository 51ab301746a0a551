"""io/redis: the retry waits of a lookup made on a thread of its own reach the throttled-time counter when
the owning DoFn asks, on its bundle's thread (a Beam counter counts nowhere else)."""
import threading

from programusers.io import redis as redis_io


def test_waits_on_another_thread_are_counted_once_when_asked(monkeypatch):
    counted = []
    monkeypatch.setattr(redis_io, "_THROTTLED", type("Counter", (), {"inc": staticmethod(counted.append)}))
    handler = redis_io.RedisHashHandler(redis_io.RedisConnection(), "user:", ("firstname",))
    with handler:  # the client connects on its first command: none is sent here
        waits = []
        backoff = handler._client.get_retry()._backoff  # the client's own (redis.Redis copies what it is given)
        lookup = threading.Thread(target=lambda: waits.extend(backoff.compute(n) for n in (1, 2, 3)))
        lookup.start()
        lookup.join()
        handler.count_throttled()
        handler.count_throttled()  # nothing waited since: nothing more counted
    assert all(0.125 <= w <= 4.0 for w in waits)
    assert counted == [round(sum(waits) * 1000)]
