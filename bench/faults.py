"""Fault benchmark: a streaming ingest on PrismRunner while one fault at a time hits the local stack.

How to run (local stack up; it pauses and kills the stack's own processes, so nothing else may use the
stack meanwhile; it leaves every service running and resumed):

    .venv/bin/python bench/faults.py                          # 50,000 events, every fault
    .venv/bin/python bench/faults.py --events 5000 --faults cassandra-pause-30s

Each fault gets its own run: fresh topics (two partitions) and a truncated keyspace; the sample's events
plus a catalogue of bad ones are produced first; then `programusers ingest --runner PrismRunner` runs as a
child process (streaming, committing its offsets, until stopped). Once the writes are under way (a share
of the rows present) the fault is injected; the bench then waits until every expected row and dead letter
is there. If the ingest dies or stops making progress, the fault is "not survived" and the operator's
recovery follows: `scripts/stack up`, the same ingest started again (it resumes from the committed
offsets: the writes are idempotent), then `programusers replay` of the dead-letter topic. The fault
"ingest-kill" is the operator's case itself: the ingest killed (SIGKILL, Prism with it) and started again.

Per fault: expected rows (from the events), rows present, dead letters by reason (distinct source
records), lost = expected rows + bad events - rows present - distinct dead letters of bad events, dead
letters of good events (the target is none), duplicates (dead letters of one source record beyond the
first), how long after the fault ends the rows grow again and all are there, and how often the ingest
logged that Cassandra was unreachable. Results: bench/results/faults.json and a Markdown table on stdout.
Only 127.0.0.1 is touched; every wait is bounded in time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import common
from programusers import events, schema, settings
from programusers.crypto import PlatformCipher
from programusers.io.kafka import ask_the_group
from programusers.local.sample_data import generate

REPO = Path(__file__).resolve().parents[1]
STACK, RUN = REPO / "scripts" / "stack", REPO / ".stack" / "run"
PROGRAMUSERS = REPO / ".venv" / "bin" / "programusers"
KEYSPACE = "bench_faults"
EVENTS_PER_USER = 1.2
STALL_SECONDS = 120  # no new row or dead letter for this long after the fault: the ingest is stuck
CATCH_UP_LIMIT_SECONDS = 420


# --- the events ---

def bad_events(template: dict) -> list[tuple[bytes, str]]:
    """(value, the dead-letter reason expected) for 50 bad events; their program is not the sample's."""
    base = {**template, "programId": "bench-faults-bad"}
    drop = {k: v for k, v in base.items() if k != "programId"}
    reason = events.Reason
    cases = ([(b"{not json", reason.INVALID_JSON)] * 10 + [(b"[1, 2]", reason.NOT_AN_OBJECT)] * 5
             + [(json.dumps({**drop, "userId": f"m{i}"}).encode(), reason.MISSING_FIELD) for i in range(10)]
             + [(json.dumps({**base, "userId": 40 + i}).encode(), reason.WRONG_TYPE) for i in range(10)]
             + [(json.dumps({**base, "userId": f"t{i}", "updatedAt": "yesterday"}).encode(), reason.BAD_TIMESTAMP)
                for i in range(10)]
             # Valid events that Cassandra itself rejects (partition key over 64 KiB): permanent write errors.
             + [(json.dumps({**base, "userId": f"{i}" + "u" * 70_000}).encode(), reason.WRITE_FAILED)
                for i in range(5)])
    return cases


def expected_rows(sample_events: list[dict]) -> int:
    """The rows the events leave: per key, the newest mutation, unless it is a delete."""
    newest: dict[tuple[str, str], object] = {}
    for event in sample_events:
        mutation = events.event_to_mutation(event, 0)
        key = (mutation.program_id, mutation.user_id)
        if key not in newest or mutation.timestamp_micros >= newest[key].timestamp_micros:
            newest[key] = mutation
    return sum(isinstance(m, events.EnrollmentUpsert) for m in newest.values())


def produce(topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "linger.ms": 20, "acks": "all"})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"not every event reached {topic}")


# --- the local stack ---

def pid(service: str) -> int:
    return int((RUN / f"{service}.pid").read_text())


def stack_up() -> None:
    subprocess.run([str(STACK), "up"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)


def pause_cassandra(seconds: float):
    def inject(ingest):
        cassandra_pid = pid("cassandra")
        os.kill(cassandra_pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(cassandra_pid, signal.SIGCONT)
        return ingest
    return inject


def kill_and_restart(*services: str, down_seconds: float = 5):
    def inject(ingest):
        for service in services:
            victim = pid(service)
            os.kill(victim, signal.SIGKILL)
            for _ in range(100):  # gone within 10 s
                if not Path(f"/proc/{victim}").exists():
                    break
                time.sleep(0.1)
        time.sleep(down_seconds)
        stack_up()
        return ingest
    return inject


def kill_the_ingest(ingest):
    """SIGKILL to the ingest and its Prism, then the same ingest started again (the same group)."""
    ingest.committed_at_kill = ingest.kill()
    return Ingest(ingest.args, ingest.log_path)


FAULTS = {
    # name: (what, inject(ingest) -> the ingest to watch from then on, share of the rows present when it starts)
    "cassandra-pause-30s": ("Cassandra paused 30 s (SIGSTOP/SIGCONT)", pause_cassandra(30), 0.2),
    "cassandra-pause-150s": ("Cassandra paused 150 s (SIGSTOP/SIGCONT)", pause_cassandra(150), 0.2),
    "cassandra-kill": ("Cassandra killed (SIGKILL), restarted by scripts/stack up", kill_and_restart("cassandra"),
                       0.2),
    "kafka-kill": ("Kafka broker killed (SIGKILL), restarted by scripts/stack up", kill_and_restart("kafka"), 0.0),
    "beam-java-restart": ("Java expansion service and SDK worker pool killed, restarted by scripts/stack up",
                          kill_and_restart("beam-expansion", "beam-java-workers"), 0.0),
    "ingest-kill": ("Ingest killed (SIGKILL, Prism with it) and started again", kill_the_ingest, 0.2),
}


# --- one run ---

class Ingest:
    """`programusers ingest` streaming on Prism, as a child process in its own session (Prism with it)."""

    def __init__(self, args: list[str], log: Path):
        self.args, self.log_path = args, log
        self._log = log.open("ab")
        self.process = subprocess.Popen([str(PROGRAMUSERS), "ingest", *args], stdout=self._log, stderr=self._log,
                                        start_new_session=True, cwd=REPO)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL to its whole session; returns the records below the offsets its group has committed."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()
        return committed_records(self.args)

    def stop(self) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)  # as Kubernetes stops it: the job cancelled, its counters logged
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        for sig in (signal.SIGTERM, signal.SIGKILL):  # Prism and any worker left in its session
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        self._log.close()
        return self.process.poll()


class DeadLetters:
    """Reads the dead-letter topic as it grows: per source record (partition, offset), its reasons."""

    def __init__(self, topic: str):
        from confluent_kafka import Consumer

        self._consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": f"bench-{uuid.uuid4()}",
                                   "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self._consumer.subscribe([topic])
        self.seen: dict[tuple[int, int], list[str]] = {}

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(500, timeout=0.1):
                if not message.error():
                    dead = json.loads(message.value())
                    self.seen.setdefault((dead["partition"], dead["offset"]), []).append(dead["reason"])

    def close(self):
        self._consumer.close()


def committed_records(flags: list[str]) -> int:
    from confluent_kafka import Consumer, TopicPartition

    option = dict(f.removeprefix("--").split("=", 1) for f in flags if f.startswith("--") and "=" in f)
    topic = option["input-topic"]
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": option["consumer-group"]})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(max(p.offset, 0) for p in ask_the_group(consumer.committed,
                                                            [TopicPartition(topic, p) for p in partitions],
                                                            timeout=10))
    finally:
        consumer.close()


def count_rows(session, programs: list[str]) -> int | None:
    try:
        return sum(session.execute(f"SELECT count(*) FROM {KEYSPACE}.{schema.ENROLLMENT_TABLE} WHERE program_id = %s",
                                   [p], timeout=10).one()[0] for p in programs)
    except Exception:  # Cassandra paused or down: no reading this tick
        return None


def run_fault(name: str, session, good: list[dict], bad: list[tuple[bytes, str]], log_dir: Path) -> dict:
    what, inject, trigger_share = FAULTS[name]
    run_id = uuid.uuid4().hex[:8]
    raw, failed = f"bench.faults.{run_id}.raw", f"bench.faults.{run_id}.failed"
    programs = sorted({e["programId"] for e in good})
    expected, expected_bad = expected_rows(good), Counter(reason for _, reason in bad)
    session.execute(f"TRUNCATE {KEYSPACE}.{schema.ENROLLMENT_TABLE}", timeout=120)
    common.create_topics([raw, failed], partitions=2)
    half = len(good) // 2
    produce(raw, [(e["userId"].encode(), json.dumps(e).encode()) for e in good[:half]] + [(None, v) for v, _ in bad]
            + [(e["userId"].encode(), json.dumps(e).encode()) for e in good[half:]])
    bad_total = sum(expected_bad.values())
    flags = ["--runner", "PrismRunner", f"--input-topic={raw}", f"--dead-letter-topic={failed}",
             f"--consumer-group=bench.faults.{run_id}", f"--programs-keyspace={KEYSPACE}"]
    log = log_dir / f"{name}.log"
    log.unlink(missing_ok=True)  # this run's lines only (a recovery's restart appends)
    dead = DeadLetters(failed)
    record = {"fault": name, "what": what, "events": len(good) + bad_total, "expected_rows": expected,
              "expected_dead_letters": dict(expected_bad),
              "log": str(log.relative_to(REPO)) if log.is_relative_to(REPO) else log.name}
    timeline = []
    started = time.monotonic()

    def tick() -> tuple[int | None, int]:
        dead.poll()
        rows = count_rows(session, programs)
        timeline.append((round(time.monotonic() - started, 1), rows, len(dead.seen)))
        return rows, len(dead.seen)

    def done(rows, dead_count) -> bool:
        return rows == expected and dead_count >= bad_total

    ingest = Ingest(flags, log)
    try:
        # 1. until the writes are under way
        deadline = started + 300
        while True:
            rows, _ = tick()
            if rows and rows >= max(1, trigger_share * expected):
                break
            if time.monotonic() > deadline or not ingest.alive():
                raise RuntimeError(f"{name}: the ingest wrote nothing in 300 s (see {log})")
            time.sleep(0.5)
        record["rows_at_fault"] = rows
        record["first_rows_after_s"] = round(time.monotonic() - started, 1)
        # 2. the fault, while the bench keeps watching from a thread-free loop afterwards
        fault_started = time.monotonic()
        restarted = inject(ingest)
        if restarted is not ingest:
            record["committed_at_kill"], ingest = ingest.committed_at_kill, restarted
        fault_ended = time.monotonic()
        record["fault_seconds"] = round(fault_ended - fault_started, 1)
        # 3. catch up, or a stall / crash
        progress, last_change, caught_up, resumed, first_rows = None, time.monotonic(), None, None, None
        while time.monotonic() - fault_ended < CATCH_UP_LIMIT_SECONDS:
            rows, dead_count = tick()
            if done(rows, dead_count):
                caught_up = time.monotonic()
                resumed = resumed or caught_up
                break
            if first_rows is None:
                first_rows = rows
            elif resumed is None and rows is not None and rows > first_rows:
                resumed = time.monotonic()  # rows growing again: the pipeline writes
            if (rows, dead_count) != progress and rows is not None:
                progress, last_change = (rows, dead_count), time.monotonic()
            if not ingest.alive() or time.monotonic() - last_change > STALL_SECONDS:
                break
            time.sleep(1)
        record["survived"] = caught_up is not None and ingest.alive()
        record["catch_up_s"] = round(caught_up - fault_ended, 1) if caught_up else None
        record["writes_resumed_s"] = round(resumed - fault_ended, 1) if resumed else None
        if not record["survived"]:
            record["ingest_exit"] = ingest.process.poll()
            record["state_when_given_up"] = {"rows": rows, "dead_letters": len(dead.seen),
                                             "ingest_alive": ingest.alive()}
            record["recovery"] = recover(ingest, flags, log, failed=failed, tick=tick, done=done)
            ingest = record["recovery"].pop("ingest")
        dead.poll(3)  # a last look for late or duplicate dead letters
    finally:
        record["ingest_exit_on_stop"] = ingest.stop()
        dead.close()
    final_rows = count_rows(session, programs)
    reasons = Counter(reasons[0] for reasons in dead.seen.values())
    bad_sources = sum(min(n, reasons[r]) for r, n in expected_bad.items())
    record.update({
        "rows_present": final_rows,
        "dead_letters_by_reason": dict(reasons),
        "dead_letters_of_good_events": max(0, len(dead.seen) - bad_total),
        "lost": expected + bad_total - (final_rows or 0) - bad_sources,
        "duplicate_dead_letters": sum(len(r) - 1 for r in dead.seen.values()),
        "unreachable_log_lines": sum("Cassandra unreachable" in line
                                     for line in log.read_text(errors="replace").splitlines()),
        # events_read of each run that ended by a stop (a killed one logs none): the last is the restart's
        "events_read_by_stopped_runs": [int(n) for n in re.findall(r"events_read=(\d+)",
                                                                     log.read_text(errors="replace"))],
        "seconds": round(time.monotonic() - started, 1),
        "timeline": timeline[::5],
    })
    try:
        common.delete_topics([raw, failed])
    except Exception as exc:
        print(f"topic cleanup: {exc}", file=sys.stderr)
    return record


def recover(ingest: Ingest, flags: list[str], log: Path, *, failed: str, tick, done) -> dict:
    """The operator's recovery: the stack up, the ingest started again, then a replay of the dead letters."""
    started = time.monotonic()
    ingest.stop()
    stack_up()
    again = Ingest(flags, log)
    caught_up = None
    while time.monotonic() - started < CATCH_UP_LIMIT_SECONDS and again.alive():
        rows, dead_count = tick()
        if done(rows, dead_count):
            caught_up = time.monotonic()
            break
        time.sleep(1)
    replay = subprocess.run([str(PROGRAMUSERS), "replay", f"--dead-letter-topic={failed}",
                             f"--programs-keyspace={KEYSPACE}"], capture_output=True, text=True, timeout=600)
    summary = [line for line in replay.stderr.splitlines() if "replay of" in line]
    tick()
    return {"ingest": again, "steps": "scripts/stack up; the same ingest started again; programusers replay",
            "restarted_ingest_caught_up_s": round(caught_up - started, 1) if caught_up else None,
            "replay_exit": replay.returncode, "replay": summary[-1].split(": ", 2)[-1] if summary else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    chosen = args.faults.split(",")
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")

    # A `timeout` or Ctrl-C still runs the finally blocks: Cassandra resumed, the ingest stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack_up()
    log_dir = REPO / ".stack" / "logs" / "bench-faults"
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster, session = common.LOCAL_CASSANDRA.connect()
    facts = common.machine(session)
    schema.init_cassandra(session, KEYSPACE, KEYSPACE, settings.REPLICATION)
    sample = generate(math.ceil(args.events / EVENTS_PER_USER) + 100, args.seed, PlatformCipher("bench"))
    good = sample.events[:args.events]
    bad = bad_events(good[0])
    results = []
    try:
        for name in chosen:
            print(f"[faults] {name} ...", file=sys.stderr)
            record = run_fault(name, session, good, bad, log_dir)
            results.append(record)
            print(json.dumps({k: v for k, v in record.items() if k != "timeline"}), file=sys.stderr)
            stack_up()  # every service answering before the next run
            session.execute("SELECT release_version FROM system.local", timeout=60)
    finally:
        try:
            for service in ("cassandra",):  # never leave it paused
                os.kill(pid(service), signal.SIGCONT)
        except (OSError, ValueError):
            pass
        stack_up()
        session.execute(f"DROP KEYSPACE IF EXISTS {KEYSPACE}", timeout=120)
        cluster.shutdown()
    path = common.write_json("faults.json", {"machine": facts, "events": args.events + len(bad), "runs": results})

    rows = []
    for r in results:
        recovery = r.get("recovery")
        rows.append([r["what"], "yes" if r["survived"] else "**no**: " + recovery["steps"],
                     f"{r['expected_rows']:,}", f"{r['rows_present']:,}" if r["rows_present"] is not None else "?",
                     ", ".join(f"{k}={v}" for k, v in sorted(r["dead_letters_by_reason"].items())),
                     r["dead_letters_of_good_events"], r["lost"], r["duplicate_dead_letters"], r["writes_resumed_s"],
                     r["catch_up_s"] if r["survived"] else f"restart: {recovery['restarted_ingest_caught_up_s']}",
                     r["unreachable_log_lines"]])
    print(f"\n### Faults ({args.events:,} good + {len(bad)} bad events, streaming on PrismRunner)\n\n"
          f"{common.machine_line(facts)}\n")
    print(common.markdown_table(
        ["fault", "survived by the pipeline", "expected rows", "rows present", "dead letters by reason",
         "dead letters of good events", "lost", "duplicate dead letters", "writes resume s after the fault",
         "all rows s after the fault",
         "'unreachable' log lines"], rows))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
