"""The Cassandra sink: CQL text, retry policy, its write engine (a plain object) and writes against the
real Cassandra of the local stack, with failures injected at the driver boundary (transient) or caused for
real (permanent)."""
import concurrent.futures
import logging
import time
from datetime import date

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from cassandra import InvalidRequest, OperationTimedOut, Unavailable, WriteTimeout, WriteType
from cassandra.cluster import NoHostAvailable
from cassandra.protocol import OverloadedErrorMessage
from cassandra.query import SimpleStatement
from conftest import LOCAL_CASSANDRA, outcomes
from test_backoff import Counted

from programusers import runners
from programusers.events import DeadLetter, EnrollmentDelete, EnrollmentUpsert, Reason
from programusers.io import cassandra_sink
from programusers.io.backoff import Backoff
from programusers.io.cassandra import CassandraConnection
from programusers.io.cassandra_sink import WritePolicy, is_transient
from programusers.metrics import counters
from programusers.transforms.enrollments import (
    EnrollmentStatements,
    WriteEnrollments,
)

T0 = 1_673_505_056_829_000  # 2023-01-12T06:30:56.829Z in micros


# --- pure helpers ---

@pytest.mark.parametrize("error,transient", [
    (WriteTimeout("timed out", write_type=WriteType.SIMPLE), True), (Unavailable("down"), True),
    (OperationTimedOut(), True), (NoHostAvailable("none", {}), True),
    (OverloadedErrorMessage(0x1001, "busy", None), True),
    (InvalidRequest("bad"), False), (TypeError("bad value"), False), (ValueError("x"), False),
])
def test_is_transient(error, transient):
    assert is_transient(error) is transient


def test_an_outage_is_logged_once_a_minute_per_process_with_counts_only(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(cassandra_sink.time, "monotonic", lambda: clock[0])
    throttle = cassandra_sink._Throttle(60)
    waiting, quiet = cassandra_sink._Outage("10.0.0.1", None, throttle), cassandra_sink._Outage("10.0.0.1", None,
                                                                                                 throttle)
    for second in range(150):  # 150 s of failing writes in two DoFn instances, many per second
        clock[0] = 1000.0 + second
        for _ in range(20):
            waiting.failed(NoHostAvailable("down", {}), waiting=17)
            quiet.failed(NoHostAvailable("down", {}), waiting=3)
    waiting.succeeded()
    quiet.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Cassandra unreachable for 0 s at 10.0.0.1 (NoHostAvailable); 17 write(s) waiting here, retrying",
        "Cassandra unreachable for 60 s at 10.0.0.1 (NoHostAvailable); 17 write(s) waiting here, retrying",
        "Cassandra unreachable for 120 s at 10.0.0.1 (NoHostAvailable); 17 write(s) waiting here, retrying",
        "Cassandra answering again after 149 s"]


def test_the_drivers_reconnection_messages_pass_once_a_minute_each(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cassandra_sink.time, "monotonic", lambda: clock[0])
    once = cassandra_sink._OncePerKind()

    def passes(template, *args):
        return once.filter(logging.LogRecord("cassandra.pool", logging.WARNING, "", 0, template, args, None))

    retry = "Error attempting to reconnect to %s, scheduling retry in %s seconds: %s"
    assert passes(retry, "127.0.0.1:9042", 2.0, "refused")
    assert not passes(retry, "127.0.0.1:9042", 2.0, "timed out")
    assert passes("Host %s has been marked down", "127.0.0.1:9042")  # another kind
    clock[0] = 61.0
    assert passes(retry, "127.0.0.1:9042", 2.0, "refused")


def test_an_outage_past_the_limit_fails_naming_cassandra(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cassandra_sink.time, "monotonic", lambda: clock[0])
    outage = cassandra_sink._Outage("10.0.0.1", limit=30, throttle=cassandra_sink._Throttle(60))
    outage.failed(OperationTimedOut(), waiting=3)
    clock[0] = 20.0
    outage.succeeded()  # one success ends the outage: its clock starts again
    clock[0] = 40.0
    outage.failed(OperationTimedOut(), waiting=3)
    clock[0] = 70.0
    outage.failed(OperationTimedOut(), waiting=3)  # 30 s: not more than the limit
    clock[0] = 70.5
    with pytest.raises(cassandra_sink.CassandraUnreachable) as raised:
        outage.failed(OperationTimedOut(), waiting=3)
    down = CassandraConnection(("127.0.0.1",), 1)  # nothing listens on port 1
    assert cassandra_sink.outage(RuntimeError("job failed"), down, 30) == (
        "Cassandra unreachable for more than the outage limit of 30 s at 127.0.0.1:1")  # a portable runner's
    # failure: Cassandra asked
    assert cassandra_sink.outage(RuntimeError("job failed"), down, None) is None  # no limit: no outage ends a job
    assert cassandra_sink.outage(raised.value, down, 30) == (  # the worker's own error, where the runner raises it
        "Cassandra unreachable for 30 s at 10.0.0.1 (OperationTimedOut), more than the outage limit of 30 s; "
        "3 write(s) waiting here, none rejected")


# --- against the real Cassandra ---

def upsert(program, user, micros, **columns):
    return EnrollmentUpsert(program, user, {"pii_consent_required": False, **columns}, micros)


def write(mutations, keyspace, expected_dead=(), fn=None):
    """Runs the sink over (index, mutation) pairs, checks its dead letters and that every other index comes
    out once as written, returns the job's counters."""
    pipeline = BeamTestPipeline(options=runners.pipeline_options("DirectRunner"))
    pairs = pipeline | beam.Create(list(enumerate(mutations)))
    if fn:
        result = pairs | beam.ParDo(fn).with_outputs(cassandra_sink.REJECTED, main="written")
        written = result.written
        failed = result[cassandra_sink.REJECTED] | beam.MapTuple(
            lambda index, detail: (index, DeadLetter(Reason.WRITE_FAILED, None, detail)))
    else:
        written, failed = pairs | WriteEnrollments(LOCAL_CASSANDRA, keyspace)
    assert_that(failed | beam.MapTuple(lambda index, dead: (index, dead.reason, dead.detail)),
                equal_to(list(expected_dead)), label="rejected")
    dead = {index for index, *_ in expected_dead}
    assert_that(written, equal_to([i for i in range(len(mutations)) if i not in dead]), label="written")
    result = pipeline.run()
    result.wait_until_finish()
    return counters(result)


def rows(session, keyspace, program):
    query = (f"SELECT user_id, program_name, user_locations, updated_at, writetime(program_name) AS stamp "
             f"FROM {keyspace}.program_enrollment WHERE program_id = %s")
    return {row.user_id: row for row in session.execute(query, [program])}


@pytest.mark.services
def test_upserts_and_deletes_converge_to_the_newest_event(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    mutations = [
        upsert(program, "u1", T0 + 10, program_name="new", user_locations={"district_name": "A"},
               updated_at=date(2023, 1, 12)),
        upsert(program, "u1", T0, program_name="old", user_locations={"district_name": "B", "block_name": "C"}),
        upsert(program, "u2", T0, program_name="joined"),
        EnrollmentDelete(program, "u2", T0 + 1),
        EnrollmentDelete(program, "u3", T0 + 1),  # leaves before joining: the older join must not win
        upsert(program, "u3", T0, program_name="joined late"),
        upsert(program, "u4", T0, program_name="kept"),
        upsert(program, "u4", T0 + 5, user_locations={"state_name": "S"}),  # partial: name untouched
    ]
    totals = write(mutations, keyspace)
    assert outcomes(totals) == {"rows_written": 6, "rows_deleted": 2}
    found = rows(cassandra_session, keyspace, program)
    assert set(found) == {"u1", "u4"}
    assert (found["u1"].program_name, found["u1"].user_locations, found["u1"].stamp) == ("new", {"district_name": "A"},
                                                                                        T0 + 10)
    assert found["u1"].updated_at.date() == date(2023, 1, 12)
    assert (found["u4"].program_name, found["u4"].user_locations) == ("kept", {"state_name": "S"})

    # Replaying the same mutations, in any order, changes nothing.
    write(list(reversed(mutations)), keyspace)
    assert rows(cassandra_session, keyspace, program) == found


@pytest.mark.services
def test_real_permanent_failures_come_back_as_dead_letters(cassandra_session, test_schema, unique):
    program = f"p-{unique}"
    oversized_key = upsert(program, "u" * 70_000, T0, program_name="x")  # Cassandra: "Key length ... longer than"
    totals = write([upsert(program, "ok", T0), oversized_key, upsert(program, "ok2", T0)],
                   test_schema["programs_keyspace"], [(1, "write_failed", "InvalidRequest after 1 attempt(s)")])
    assert outcomes(totals) == {"rows_written": 2}
    assert set(rows(cassandra_session, test_schema["programs_keyspace"], program)) == {"ok", "ok2"}

    totals = write([upsert(program, "u1", T0), EnrollmentDelete(program, "u1", T0)], f"no_such_ks_{unique}",
                   [(0, "write_failed", "InvalidRequest after 1 attempt(s)"),
                    (1, "write_failed", "InvalidRequest after 1 attempt(s)")])
    assert outcomes(totals) == {}


class _FailedFuture(concurrent.futures.Future):
    def __init__(self, error):
        super().__init__()
        self.set_exception(error)


class _Awaited:
    def __init__(self, future, session):
        self._future, self._session = future, session

    def result(self):
        try:
            return self._future.result()
        finally:
            self._session.awaited += 1


class FlakySession:
    """A session (a real one, or None for no Cassandra at all) whose first `failures` executions fail the
    way a busy cluster fails them, and which counts the requests sent and those whose outcome the sink
    has waited for."""

    def __init__(self, session, failures):
        self._session, self._failures = session, failures
        self.sent = self.awaited = self.most_outstanding = 0
        self.requests = []

    def prepare(self, cql):
        return self._session.prepare(cql) if self._session else _Unprepared()

    def execute_async(self, statement):
        self.requests.append(statement)
        self.sent += 1
        self.most_outstanding = max(self.most_outstanding, self.sent - self.awaited)
        if self._failures > 0:
            self._failures -= 1
            future = _FailedFuture(WriteTimeout("injected", write_type=WriteType.SIMPLE))
        elif self._session:
            future = self._session.execute_async(statement)
        else:
            future = concurrent.futures.Future()
            future.set_result(None)
        return _Awaited(future, self)


class _Unprepared:
    """A statement for no Cassandra: bound, it is a plain statement routed by its program, as the driver's are."""

    def bind(self, values):
        return SimpleStatement("-- not sent", routing_key=b"program", keyspace="ks")


def writer(session, keyspace="ks", concurrency=4, max_batch_bytes=cassandra_sink.MAX_BATCH_BYTES,
           throttled=None) -> cassandra_sink._Writer:
    """The sink's engine on `session`, with short backoffs and no outage limit."""
    policy = WritePolicy(concurrency=concurrency, backoff=0.01, max_backoff=0.05, max_batch_bytes=max_batch_bytes)
    return cassandra_sink._Writer(session, EnrollmentStatements(keyspace), policy,
                                  outage=cassandra_sink._Outage("test", None), throttled=throttled or Counted())


def run_writer(engine, mutations) -> tuple[list, list]:
    """(index, mutation) pairs through the engine, then a flush: (indices written, (index, detail) rejected)."""
    outcomes = [outcome for i, mutation in enumerate(mutations) for outcome in engine.put(i, mutation)]
    outcomes += engine.flush()
    return (sorted(context for context, rejected in outcomes if rejected is None),
            sorted(outcome for outcome in outcomes if outcome.rejected is not None))


class FlakyWriteFn(cassandra_sink._WriteMutationsFn):
    """The sink on a FlakySession, after `refused` failed connection attempts (NoHostAvailable, as when
    Cassandra is down)."""

    def __init__(self, keyspace, failures, refused=0, max_outage=None):
        super().__init__(LOCAL_CASSANDRA, EnrollmentStatements(keyspace),
                         WritePolicy(concurrency=4, backoff=0.01, max_backoff=0.05, max_outage=max_outage))
        self._failures, self._refused = failures, refused

    def _acquire_session(self):
        if self._refused > 0:
            self._refused -= 1
            raise NoHostAvailable("injected", {})
        return FlakySession(super()._acquire_session(), self._failures)


@pytest.mark.services
def test_transient_failures_are_retried_until_they_land_never_dead_lettered(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    mutations = [upsert(program, f"u{i}", T0, program_name=f"n{i}") for i in range(10)]
    # 200 failures: each write fails ~20 times in a row, far past any fixed retry budget.
    totals = write(mutations, keyspace, fn=FlakyWriteFn(keyspace, failures=200, refused=3))
    # Every injected failure sent again (a real timeout on a loaded machine may add some), with backoff.
    assert totals["write_retries"] >= 200 and totals["write_throttled_ms"] > 0
    assert outcomes(totals) == {"rows_written": 10}
    assert len(rows(cassandra_session, keyspace, program)) == 10


@pytest.mark.services
def test_an_outage_past_the_limit_fails_the_job_and_dead_letters_nothing(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    mutations = [upsert(program, f"u{i}", T0) for i in range(5)]
    with pytest.raises(Exception) as raised:
        write(mutations, keyspace, fn=FlakyWriteFn(keyspace, failures=10**9, max_outage=1.0))
    assert "more than the outage limit of 1 s" in cassandra_sink.outage(raised.value, LOCAL_CASSANDRA, 1.0)
    assert cassandra_sink.outage(RuntimeError("job failed"), LOCAL_CASSANDRA, 1.0) is None  # Cassandra answers
    assert rows(cassandra_session, keyspace, program) == {}


def test_a_worker_starting_while_cassandra_is_unreachable_waits_then_gives_up_at_the_limit():
    down = CassandraConnection(("127.0.0.1",), 1)  # nothing listens on port 1: refused at once
    throttled, started = Counted(), time.monotonic()
    with pytest.raises(cassandra_sink.CassandraUnreachable,
                       match="more than the outage limit of 1.5 s; connecting, no write sent yet"):
        cassandra_sink._connect_waiting(lambda: down.connect()[1], cassandra_sink._Outage("127.0.0.1:1", 1.5),
                                        Backoff(0.1, 0.2), throttled)
    assert 1.5 <= time.monotonic() - started < 10
    assert 1000 <= throttled.total <= (time.monotonic() - started) * 1000  # its waits, as throttled time


def test_throttled_time_is_the_wall_time_some_write_waited_however_many_waited_together():
    # 20 writes, each failing once at the same time: their backoffs overlap, and count once.
    throttled, session = Counted(), FlakySession(None, failures=20)
    engine = writer(session, concurrency=20, max_batch_bytes=0, throttled=throttled)
    started = time.monotonic()
    written, rejected = run_writer(engine, [upsert("p", f"u{i}", T0) for i in range(20)])
    elapsed_ms = (time.monotonic() - started) * 1000
    assert (written, rejected, session.sent) == (list(range(20)), [], 40)
    # At least the shortest wait (half of 0.01 s); never more than elapsed, but for the rounding to whole
    # milliseconds (CI once counted 10 ms in 9.97 ms). Counted once per write, it would be 20 times that.
    assert 5 <= throttled.total <= elapsed_ms + 1


def test_in_flight_writes_are_bounded_and_a_flush_ends_with_none_outstanding():
    session = FlakySession(None, failures=0)
    written, rejected = run_writer(writer(session, concurrency=3, max_batch_bytes=0),
                                   [upsert("p", f"u{i}", T0) for i in range(20)])
    assert session.sent == session.awaited == 20
    assert session.most_outstanding == 3
    assert (written, rejected) == (list(range(20)), [])  # each context once, when written


def test_writes_a_failed_bundle_left_are_forgotten_by_the_next_bundle():
    engine = writer(FlakySession(None, failures=0))
    left = [outcome for i in range(3) for outcome in engine.put(i, upsert("p", f"u{i}", T0))]
    assert left == []  # gathered into a batch, not yet sent: the bundle failed here
    engine.forget()
    assert run_writer(engine, [upsert("p", "u9", T0)]) == ([0], [])  # the next bundle's own write only


def test_value_bytes_counts_text_and_maps_and_a_little_for_the_rest():
    assert cassandra_sink.value_bytes(["abc", b"de", {"k": "vv", "x": None}, 7, None]) == 3 + 2 + (1 + 2 + 1) + 8 + 8


@pytest.mark.services
def test_a_programs_mutations_go_as_batches_each_with_its_own_timestamp(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    mutations = [upsert(program, f"u{i}", T0 + i, program_name=f"n{i}") for i in range(60)]
    mutations += [upsert(f"other-{unique}", "u0", T0)]
    session = FlakySession(cassandra_session, failures=0)
    written, rejected = run_writer(writer(session, keyspace, max_batch_bytes=1000), mutations)
    assert (written, rejected) == (list(range(len(mutations))), [])
    assert session.sent < len(mutations) / 3  # batches, each under 1,000 bytes of values
    found = rows(cassandra_session, keyspace, program)
    assert {user: (r.program_name, r.stamp) for user, r in found.items()} == {
        f"u{i}": (f"n{i}", T0 + i) for i in range(60)}


@pytest.mark.services
def test_every_request_is_routed_to_its_programs_replicas(cassandra_session, test_schema, unique):
    # An INSERT ... JSON hides the partition key from the driver: without a routing key set by the sink,
    # token-aware routing would send the write to any node, which then forwards it.
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    session = FlakySession(cassandra_session, failures=0)
    mutations = [upsert(program, f"u{i}", T0) for i in range(3)] + [EnrollmentDelete(program, "u9", T0)]
    assert run_writer(writer(session, keyspace, max_batch_bytes=0), mutations) == ([0, 1, 2, 3], [])
    assert run_writer(writer(session, keyspace), mutations)[0] == [0, 1, 2, 3]  # one batch
    # What the driver's TokenAwarePolicy looks up the replicas by.
    assert [(r.routing_key, r.keyspace) for r in session.requests] == [(program.encode(), keyspace)] * 5


@pytest.mark.services
def test_a_batch_cassandra_rejects_is_sent_again_statement_by_statement(cassandra_session, test_schema, unique):
    keyspace, program = test_schema["programs_keyspace"], f"p-{unique}"
    mutations = [upsert(program, f"u{i}", T0) for i in range(5)]
    mutations.insert(2, upsert(program, "u" * 70_000, T0))  # one bad clustering key inside the batch
    written, rejected = run_writer(writer(cassandra_session, keyspace, max_batch_bytes=1 << 20), mutations)
    assert written == [0, 1, 3, 4, 5] and rejected == [(2, "InvalidRequest after 1 attempt(s)")]
    assert set(rows(cassandra_session, keyspace, program)) == {f"u{i}" for i in range(5)}
