"""io/backoff.py: the one backoff rule of io/ (capped doubling, second half random), the one retry loop over
it, and the throttled-time counting."""
import pytest
from redis.backoff import EqualJitterBackoff

from programusers.io.backoff import Backoff, count_wait, retry


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


class FakeClock:
    """Time that moves only when slept (or by `tick` at each look), so no test really waits."""

    def __init__(self, tick=0.0):
        self.now, self.tick, self.slept = 100.0, tick, []

    def monotonic(self):
        self.now += self.tick
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class Busy(Exception):
    pass


def failing(times, error=Busy, result="done"):
    """A call that raises `error` its first `times` calls, then returns `result`; `.calls` counts them."""
    def call():
        call.calls += 1
        if call.calls <= times:
            raise error(f"attempt {call.calls}")
        return result
    call.calls = 0
    return call


STEADY = Backoff(1.0, 4.0)


def busy(error):
    return isinstance(error, Busy)


def test_a_call_is_retried_with_the_backoffs_waits_until_it_succeeds():
    clock, call = FakeClock(), failing(4)
    assert retry(call, STEADY, busy, clock=clock) == "done"
    assert call.calls == 5
    assert len(clock.slept) == 4
    assert all(0.5 * step <= s < step for s, step in zip(clock.slept, (1.0, 2.0, 4.0, 4.0)))


def test_a_call_that_succeeds_at_once_neither_waits_nor_reports():
    clock, waits = FakeClock(), []
    assert retry(failing(0), STEADY, busy, on_wait=lambda e, s: waits.append(s), clock=clock) == "done"
    assert clock.slept == [] and waits == []


def test_each_wait_is_reported_before_it_is_slept_with_its_error():
    clock, reported = FakeClock(), []

    def on_wait(error, seconds):
        reported.append((str(error), seconds, len(clock.slept)))

    retry(failing(2), STEADY, busy, on_wait=on_wait, clock=clock)
    assert [(text, slept_before) for text, _, slept_before in reported] == [("attempt 1", 0), ("attempt 2", 1)]
    assert [seconds for _, seconds, _ in reported] == clock.slept


class TwoSeconds:
    """A backoff without jitter: every wait 2 s."""

    def seconds(self, attempt):
        return 2.0


def test_the_limit_stops_the_retrying_by_raising_the_last_error():
    clock, call = FakeClock(), failing(1000)
    with pytest.raises(Busy, match="attempt 3$"):
        retry(call, TwoSeconds(), busy, limit=5.0, clock=clock)  # waits end at 2 s, 4 s; a third would at 6 s
    assert call.calls == 3 and clock.slept == [2.0, 2.0]


def test_a_wait_that_would_end_past_the_limit_is_not_begun():
    clock = FakeClock(tick=10.0)  # each look at the clock: 10 s later
    waits = []
    with pytest.raises(Busy, match="attempt 1$"):
        retry(failing(1000), STEADY, busy, limit=10.0, on_wait=lambda e, s: waits.append(s), clock=clock)
    assert clock.slept == [] and waits == []  # nor reported


def test_no_limit_retries_for_ever():
    clock, call = FakeClock(), failing(200)
    assert retry(call, Backoff(1.0, 60.0), busy, limit=None, clock=clock) == "done"
    assert call.calls == 201 and sum(clock.slept) > 200 * 30  # hours of (fake) waiting, never given up


def test_errors_not_worth_another_try_are_raised_at_once():
    clock, reported = FakeClock(), []
    call = failing(1, error=ValueError)
    with pytest.raises(ValueError, match="attempt 1$"):
        retry(call, STEADY, busy, limit=None, on_wait=lambda e, s: reported.append(e), clock=clock)
    assert call.calls == 1 and clock.slept == [] and reported == []


def test_the_predicate_picks_among_errors_of_one_kind():
    # As a Kafka error is worth another try by its code, or a Cassandra outage unless it refused the login.
    class Coded(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.code = code

    codes = iter(["busy", "busy", "refused", "busy"])

    def call():
        raise Coded(next(codes))

    clock = FakeClock()
    with pytest.raises(Coded) as raised:
        retry(call, STEADY, lambda e: isinstance(e, Coded) and e.code == "busy", clock=clock)
    assert raised.value.code == "refused" and len(clock.slept) == 2


def test_an_error_raised_by_on_wait_ends_the_retrying():
    # As an outage limit of the caller's own (cassandra_sink's _Outage) does.
    class Limit(Exception):
        pass

    def on_wait(error, seconds):
        if len(clock.slept) == 2:
            raise Limit("over the outage limit") from error

    clock, call = FakeClock(), failing(1000)
    with pytest.raises(Limit):
        retry(call, STEADY, busy, on_wait=on_wait, clock=clock)
    assert call.calls == 3 and len(clock.slept) == 2


def test_the_time_module_is_the_default_clock_looked_up_at_each_use(monkeypatch):
    import time

    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert retry(failing(2), STEADY, busy) == "done"
    assert len(slept) == 2
