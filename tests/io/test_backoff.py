"""io/backoff.py: the one backoff rule of io/ (capped doubling, second half random) and the throttled-time
counting."""
from redis.backoff import EqualJitterBackoff

from programusers.io.backoff import Backoff, count_wait


def test_backoff_doubles_up_to_a_cap():
    def top(attempt, backoff):
        return backoff.seconds(attempt, jitter=lambda: 1.0)

    assert [top(n, Backoff(0.5, 5.0)) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert top(40, Backoff(0.5, 5.0)) == top(10**6, Backoff(0.5, 5.0)) == 5.0
    assert top(5, Backoff(0.5, 3.0)) == 3.0
    # The second half of each step is random: clients failed together come back spread out.
    assert Backoff(0.5, 5.0).seconds(3, jitter=lambda: 0.0) == 1.0
    waits = {Backoff(0.5, 5.0).seconds(3) for _ in range(50)}
    assert len(waits) > 1 and all(1.0 <= wait < 2.0 for wait in waits)


def test_redis_pys_equal_jitter_is_the_same_rule():
    # io/redis.py uses redis-py's own backoff, whose attempts count from 1 as ours do (base 0.25: a 0.5 s step).
    waits = [EqualJitterBackoff(cap=4.0, base=0.25).compute(2) for _ in range(50)]
    assert all(0.5 <= wait <= 1.0 for wait in waits)


class Counted:
    def __init__(self):
        self.total, self.calls = 0, 0

    def inc(self, n):
        self.total, self.calls = self.total + n, self.calls + 1


def test_a_wait_counts_in_whole_milliseconds_and_none_counts_nothing():
    counter = Counted()
    count_wait(counter, 0.0)
    count_wait(counter, 0.0004)
    assert counter.calls == 0  # never incremented: the counter stays out of the job's counters
    count_wait(counter, 1.2346)
    assert (counter.total, counter.calls) == (1235, 1)
