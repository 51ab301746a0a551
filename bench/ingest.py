"""Ingest benchmark: `programusers ingest` as a backfill, against a tuned hand-written script and a raw per-row loop.

How to run (local stack up: `scripts/stack up`):

    .venv/bin/python bench/ingest.py --baseline --rounds 3          # 100,000 events, the issue 27 comparison
    .venv/bin/python bench/ingest.py --events 20000 --rounds 1 --no-per-row

It generates random events (the sample generator's enrollments, then updates of some of them, a later
updatedAt, a new profile, some without their locations, and deletes, some of them enrolled again later),
shuffled, and produces them to a new topic of the stack's default 2 partitions. Each round:
  1. the ingest: `programusers ingest --max-records N` (and `--runner R` given --runner) in a process of its
     own, the ingest's default flags otherwise (a fresh consumer group, its own keyspace and dead-letter topic);
  2. with --baseline, bench/ingest_script.py in a process of its own, into another keyspace; rounds
     alternate which of the two goes first;
  3. in the first round only (it takes minutes: the stack's Cassandra applies about 530 mutations a
     second), the raw per-row loop: the mapper's mutations (events.parse_event) with the sink's prepared
     statements (enrollments.EnrollmentStatements) and execute_concurrent_with_args at 32 in flight, one request a
     statement, into a third keyspace.
Both processes are timed whole, start to exit (interpreter, imports and, for the ingest, planning and
the pipeline's start included), and events/s is events over that time; the in-process time each reports is
kept too. Every table is then read back and checked cell by cell against the ingest's (and its row keys
against the rows the events leave). Medians over the rounds, ratios taken within a round, go to
bench/results/ingest.json and a Markdown table on stdout. The bench keyspaces and topics are dropped at the
end (--keep keeps them). Flink and Spark are reported as not measurable here.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psutil
from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

import common
from programusers import events, schema, settings
from programusers.crypto import PlatformCipher
from programusers.io import kafka
from programusers.local.sample_data import ORGS, enrollment_event, generate, produce_events
from programusers.transforms import enrollments

INGEST_KEYSPACE, SCRIPT_KEYSPACE, PER_ROW_KEYSPACE = "bench_ingest", "bench_ingest_script", "bench_ingest_per_row"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ingest_script.py")
PROGRAMUSERS = os.path.join(os.path.dirname(sys.executable), "programusers")
EVENTS_PER_USER = 1.2  # the sample's mix: half join one program, 30 % the other, 20 % both
CREATES, UPDATES = 0.75, 0.15  # of the events; the rest are deletes
_DONE = re.compile(r"ingest (\S+) after ([\d.]+)s, [\d.]+ events/s: (.*)$", re.MULTILINE)


def bench_events(count: int, seed: int) -> tuple[list[dict], list[str]]:
    """`count` shuffled events and their programs: enrollments, updates of them and deletes."""
    rng = random.Random(seed)
    creates = math.ceil(count * CREATES)
    # The profiles' salt is irrelevant to the ingest; events carry no encrypted field.
    sample = generate(math.ceil(creates / EVENTS_PER_USER) + 100, seed, PlatformCipher("bench"))
    programs = {p["id"]: p for p in sample.programs}
    made = sample.events[:creates]
    while len(made) < count:
        base = rng.choice(made[:creates])
        later = events.parse_timestamp(base["updatedAt"]) + timedelta(minutes=rng.randint(1, 90 * 24 * 60))
        stamp = later.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if len(made) < creates + (count - creates) * UPDATES / (1 - CREATES):
            update = enrollment_event(rng, programs[base["programId"]], base["userId"], rng.choice(ORGS))
            update.update(createdAt=base["createdAt"], updatedAt=stamp)
            if rng.random() < 0.3:  # a partial upsert: the stored locations stay
                update["userProfile"].pop("userLocations", None)
            made.append(update)
        else:
            made.append({"programId": base["programId"], "userId": base["userId"], "deleted": True,
                         "updatedAt": stamp})
            if rng.random() < 0.2 and len(made) < count:  # enrolled again after leaving
                again = copy.deepcopy(base)
                again["updatedAt"] = (later + timedelta(minutes=rng.randint(1, 60))).strftime(
                    "%Y-%m-%dT%H:%M:%S.000Z")
                made.append(again)
    rng.shuffle(made)
    return made, sorted(programs)


def live_keys(mutations: list) -> set[tuple[str, str]]:
    """(program_id, user_id) of the rows the mutations leave: an upsert newer than every delete of its row
    (a delete wins a tie, as in Cassandra)."""
    newest_upsert, newest_delete = {}, {}
    for m in mutations:
        into = newest_delete if isinstance(m, events.EnrollmentDelete) else newest_upsert
        key = (m.program_id, m.user_id)
        into[key] = max(into.get(key, -1), m.timestamp_micros)
    return {key for key, t in newest_upsert.items() if t > newest_delete.get(key, -1)}


def table_rows(session, keyspace: str, programs: list[str]) -> dict[tuple[str, str], dict]:
    rows = {}
    for program in programs:
        for row in session.execute(f"SELECT * FROM {keyspace}.{schema.ENROLLMENT_TABLE} WHERE program_id = %s",
                                   [program], timeout=120):
            rows[(row.program_id, row.user_id)] = row._asdict()
    return rows


def compare(reference: dict, other: dict) -> dict:
    """Rows missing from `other`, rows it has in addition, and cells that differ in rows both have."""
    both = reference.keys() & other.keys()
    return {"rows": len(other), "missing_rows": len(reference.keys() - other.keys()),
            "extra_rows": len(other.keys() - reference.keys()),
            "wrong_cells": sum(other[key].get(column) != value for key in both
                               for column, value in reference[key].items()),
            "cells_checked": sum(len(reference[key]) for key in both)}


def timed_process(argv: list[str]) -> tuple[float, subprocess.CompletedProcess, dict]:
    """Runs `argv` to its end: (wall seconds, the completed process, the peak RSS of it and its children)."""
    with common.PeakRss(parent=False) as rss:
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {done.returncode}: {done.stderr[-3000:]}")
    peaks = rss.summary()
    return seconds, done, {"processes_mib": round(sum(v for k, v in peaks.items() if not k.startswith("store:")
                                                      and "sum of peaks" not in k), 1), "each": peaks}


def runner_flags(runner: str | None) -> list[str]:
    return ["--runner", runner] if runner else []


def run_ingest(runner: str | None, topic: str, dead_letters: str, count: int, extra: list[str]) -> dict:
    seconds, done, rss = timed_process(
        [PROGRAMUSERS, "ingest", *runner_flags(runner), "--max-records", str(count), "--input-topic", topic,
         "--dead-letter-topic", dead_letters, "--consumer-group", f"bench-ingest-{uuid.uuid4().hex[:8]}",
         "--programs-keyspace", INGEST_KEYSPACE, *extra])
    state, pipeline_seconds, counters = _DONE.search(done.stderr).groups()
    label = f"programusers ingest {' '.join(runner_flags(runner)) or '(its default runner)'}"
    return {"runner": label, "state": state, "wall_s": round(seconds, 2),
            "events_per_s": round(count / seconds), "command_s": float(pipeline_seconds),
            "counters": dict(c.split("=") for c in counters.split(", ")), "peak_rss_mib": rss}


def run_script(topic: str, count: int) -> dict:
    seconds, done, rss = timed_process([sys.executable, SCRIPT, "--topic", topic, "--keyspace", SCRIPT_KEYSPACE])
    report = json.loads(done.stdout)
    if report["events"] != count:
        raise RuntimeError(f"the script read {report['events']} of {count} events")
    return {**report, "in_process_s": report.pop("wall_s"), "wall_s": round(seconds, 2),
            "events_per_s": round(count / seconds), "peak_rss_mib": rss}


def per_row_loop(session, mutations: list, concurrency: int) -> dict:
    """The sink's statements and concurrency, one request a statement, without Beam or Kafka."""
    statements, groups, prepared = enrollments.EnrollmentStatements(PER_ROW_KEYSPACE), {}, {}
    for m in mutations:
        groups.setdefault(statements.key(m), []).append(statements.values(m))
    for key in groups:
        prepared[key] = statement = session.prepare(statements.cql(key))
        statement.consistency_level = ConsistencyLevel.LOCAL_QUORUM
    started = time.perf_counter()
    for key, params in groups.items():
        execute_concurrent_with_args(session, prepared[key], params, concurrency=concurrency,
                                     raise_on_first_error=True)
    seconds = time.perf_counter() - started
    return {"runner": "raw per-row loop (in the bench process, no Kafka)", "wall_s": round(seconds, 2),
            "events_per_s": round(len(mutations) / seconds)}


class GroupProgress:
    """The topic's end offsets and the consumer group's committed offsets, summed over the partitions."""

    def __init__(self, topic: str, group: str, partitions: int):
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": group})
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def ends_and_committed(self) -> tuple[int, int | None]:
        """(records on the topic, records committed); committed is None until every partition has a commit."""
        ends = sum(self._consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in self._partitions)
        committed = [tp.offset for tp in self._consumer.committed(self._partitions, timeout=30)]
        return ends, sum(committed) if all(o >= 0 for o in committed) else None

    def close(self) -> None:
        self._consumer.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children so far."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for each in [process, *process.children(recursive=True)]:
                times = each.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def paced(producer, topic: str, messages: list[tuple[bytes, bytes]], rate: int, seconds: float, start: int) -> int:
    """Produces `rate` messages a second for `seconds`, cycling through `messages` from index `start`;
    returns how many it produced."""
    began, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            key, value = messages[(start + sent) % len(messages)]
            producer.produce(topic, key=key, value=value)
            sent += 1
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(60)
    return sent


def streaming(args, messages: list[tuple[bytes, bytes]], topic: str, dead_letters: str, logs: str) -> dict:
    """A streaming ingest (default flags) catching up a backlog of every message, then fed live at each rate."""
    from confluent_kafka import Producer

    group = f"bench-streaming-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "linger.ms": 5})
    progress = GroupProgress(topic, group, args.partitions)
    java_workers = [pid for name, pid in common.store_processes().items() if name == "java-sdk-worker-pool"]
    result = {"group": group, "log": os.path.basename(logs), "rates": []}  # the temp dir is this machine's
    with open(logs, "w") as log:
        ingest = subprocess.Popen([PROGRAMUSERS, "ingest", *runner_flags(args.runner), "--input-topic", topic,
                                   "--dead-letter-topic", dead_letters, "--consumer-group", group,
                                   "--programs-keyspace", INGEST_KEYSPACE], stdout=log, stderr=subprocess.STDOUT)
    try:
        launched = time.monotonic()
        while progress.ends_and_committed()[1] is None:  # its committer is up once the start offsets are in
            if ingest.poll() is not None or time.monotonic() - launched > 240:
                raise RuntimeError(f"the streaming ingest did not start; see {logs}")
            time.sleep(0.2)
        result["start_s"] = round(time.monotonic() - launched, 1)
        # The backlog: every message, produced at once while the job waits for records.
        ends, committed = progress.ends_and_committed()
        cpu_before = {"ingest": cpu_seconds([ingest.pid]), "java": cpu_seconds(java_workers)}
        for key, value in messages:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
        producer.flush(60)
        began = time.monotonic()
        while (now := progress.ends_and_committed())[1] < now[0]:
            if ingest.poll() is not None:
                raise RuntimeError(f"the streaming ingest ended; see {logs}")
            time.sleep(0.2)
        seconds = time.monotonic() - began
        backlog = len(messages)
        result["catch_up"] = {
            "records": backlog, "seconds": round(seconds, 1), "records_per_s": round(backlog / seconds),
            "cpu_us_per_record": {name: round((cpu_seconds(pids) - cpu_before[name]) / backlog * 1e6)
                                  for name, pids in (("ingest", [ingest.pid]), ("java", java_workers))}}
        print(json.dumps({"catch_up": result["catch_up"]}), file=sys.stderr)
        sent_so_far = 0
        for rate in args.rates:
            ends, committed = progress.ends_and_committed()
            began, samples = time.monotonic(), []
            with ThreadPoolExecutor(1) as pool:  # the producer paced on its own thread, the lag sampled here
                step = pool.submit(paced, producer, topic, messages, rate, args.step_seconds, sent_so_far)
                while not step.done():
                    time.sleep(1.0)
                    now_ends, now_committed = progress.ends_and_committed()
                    samples.append((time.monotonic() - began, now_ends - ends, now_committed - committed))
                produced = step.result()
            sent_so_far += produced
            half = [s for s in samples if s[0] >= args.step_seconds / 2]
            drained = time.monotonic()
            while (now := progress.ends_and_committed())[1] < now[0] and time.monotonic() - drained < 300:
                time.sleep(0.5)
            step_result = {
                "rate": rate, "produced_per_s": round(produced / args.step_seconds),
                "committed_per_s_second_half": round((half[-1][2] - half[0][2]) / (half[-1][0] - half[0][0])),
                "lag_second_half": [s[1] - s[2] for s in half],
                "drain_s_after": round(time.monotonic() - drained, 1)}
            step_result["keeps_up"] = (step_result["drain_s_after"] < 15 and step_result["committed_per_s_second_half"]
                                       >= 0.95 * step_result["produced_per_s"])
            result["rates"].append(step_result)
            print(json.dumps(step_result), file=sys.stderr)
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(120)
        progress.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runner", help="the ingest's --runner; default: none given (a backfill runs in process, "
                                         "a streaming ingest on PrismRunner)")
    parser.add_argument("--ingest-args", default="", help="more flags for the ingest, e.g. '--write-batch-bytes 0'")
    parser.add_argument("--baseline", action="store_true", help="run bench/ingest_script.py beside the ingest")
    parser.add_argument("--no-per-row", dest="per_row", action="store_false", help="skip the raw per-row loop")
    parser.add_argument("--partitions", type=int, default=2, help="the topic's (the stack's default: 2)")
    parser.add_argument("--streaming", action="store_true",
                        help="instead: a streaming ingest catching up a backlog of --events, then fed live at each "
                             "of --rates; into ingest.json's `streaming`")
    parser.add_argument("--rates", type=lambda text: [int(r) for r in text.split(",")], default=[1000, 2000, 4000],
                        help="events/s of live traffic, one step each")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the bench keyspaces and topics")
    args = parser.parse_args(argv)

    cluster, session = common.LOCAL_CASSANDRA.connect()
    facts = common.machine(session)
    run_id = uuid.uuid4().hex[:8]
    topic, dead_letters = f"bench.programusers.{run_id}.raw", f"bench.programusers.{run_id}.failed"
    keyspaces = (INGEST_KEYSPACE, SCRIPT_KEYSPACE, PER_ROW_KEYSPACE)
    rounds = []
    try:
        for keyspace in keyspaces:
            schema.init_cassandra(session, keyspace, keyspace, settings.REPLICATION)
        made, programs = bench_events(args.events, args.seed)
        mutations = [events.event_to_mutation(e, 0) for e in made]
        expected = live_keys(mutations)
        common.create_topics([topic], partitions=args.partitions)
        common.create_topics([dead_letters])
        if args.streaming:
            session.execute(f"TRUNCATE {INGEST_KEYSPACE}.{schema.ENROLLMENT_TABLE}", timeout=120)
            messages = [(e["userId"].encode(), json.dumps(e).encode()) for e in made]
            logs = os.path.join(tempfile.gettempdir(), f"bench-ingest-streaming-{run_id}.log")
            result = streaming(args, messages, topic, dead_letters, logs)
            payload = json.loads(common.RESULTS.joinpath("ingest.json").read_text())
            payload["streaming"] = {"machine": facts, "partitions": args.partitions, "backlog": args.events,
                                    "step_seconds": args.step_seconds, **result}
            print(f"results: {common.write_json('ingest.json', payload)}", file=sys.stderr)
            return 0
        produce_events(made, kafka.KafkaClientConfig(settings.KAFKA_BOOTSTRAP), topic)
        print(f"{len(made)} events on {topic} ({args.partitions} partitions): "
              f"{sum(isinstance(m, events.EnrollmentDelete) for m in mutations)} deletes, {len(expected)} rows left",
              file=sys.stderr)

        for number in range(1, args.rounds + 1):
            round_ = {"round": number}
            order = ["ingest", "script"] if args.baseline else ["ingest"]
            for name in order if number % 2 else order[::-1]:
                keyspace = INGEST_KEYSPACE if name == "ingest" else SCRIPT_KEYSPACE
                session.execute(f"TRUNCATE {keyspace}.{schema.ENROLLMENT_TABLE}", timeout=120)
                round_[name] = (run_ingest(args.runner, topic, dead_letters, args.events, args.ingest_args.split())
                                if name == "ingest" else run_script(topic, args.events))
            if args.per_row and number == 1:
                session.execute(f"TRUNCATE {PER_ROW_KEYSPACE}.{schema.ENROLLMENT_TABLE}", timeout=120)
                round_["per_row"] = per_row_loop(session, mutations, concurrency=32)
            reference = table_rows(session, INGEST_KEYSPACE, programs)
            round_["ingest"]["table"] = {"rows": len(reference), "keys_as_the_events_leave_them":
                                         set(reference) == expected}
            for name, keyspace in (("script", SCRIPT_KEYSPACE), ("per_row", PER_ROW_KEYSPACE)):
                if name in round_:
                    round_[name]["table"] = compare(reference, table_rows(session, keyspace, programs))
                    round_[name]["ratio_ingest_to_it"] = round(
                        round_["ingest"]["events_per_s"] / round_[name]["events_per_s"], 3)
            rounds.append(round_)
            print(json.dumps(round_), file=sys.stderr)
    finally:
        if not args.keep:
            for keyspace in keyspaces:
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
            try:
                common.delete_topics([topic, dead_letters])
            except Exception as exc:  # a topic never created
                print(f"topic cleanup: {exc}", file=sys.stderr)
        cluster.shutdown()

    def summary(name: str) -> dict | None:
        runs = [r[name] for r in rounds if name in r]
        if not runs:
            return None
        return {"runner": runs[0]["runner"], "rounds": len(runs),
                "wall_s": common.median(r["wall_s"] for r in runs),
                "each_wall_s": [r["wall_s"] for r in runs],
                "events_per_s": common.median(r["events_per_s"] for r in runs),
                "ratio_ingest_to_it": common.median(r.get("ratio_ingest_to_it") for r in runs),
                "each_ratio": [r.get("ratio_ingest_to_it") for r in runs],
                "peak_rss_mib": common.median(r["peak_rss_mib"]["processes_mib"] for r in runs
                                              if "peak_rss_mib" in r),
                "table": runs[-1]["table"]}

    summaries = {name: s for name in ("ingest", "script", "per_row") if (s := summary(name))}
    payload = {"machine": facts, "events": args.events, "partitions": args.partitions, "rounds": args.rounds,
               "ingest_args": args.ingest_args, "summary": summaries, "details": rounds,
               "not_measured": {r: common.UNAVAILABLE[r] for r in ("FlinkRunner", "SparkRunner")}}
    earlier = common.RESULTS / "ingest.json"
    if earlier.exists() and "streaming" in (kept := json.loads(earlier.read_text())):
        payload["streaming"] = kept["streaming"]
    path = common.write_json("ingest.json", payload)

    def cells(s: dict) -> str:
        table = s["table"]
        if "wrong_cells" not in table:
            return f"{table['rows']:,} rows, keys as the events leave them: {table['keys_as_the_events_leave_them']}"
        return (f"{table['rows']:,} rows, {table['missing_rows'] + table['extra_rows']} rows and "
                f"{table['wrong_cells']} of {table['cells_checked']:,} cells unlike the ingest's")

    rows = [[s["runner"], s["rounds"], f"{s['wall_s']:.1f}", ", ".join(f"{w:.1f}" for w in s["each_wall_s"]),
             f"{s['events_per_s']:,}", s["peak_rss_mib"] or "—",
             "" if s["ratio_ingest_to_it"] is None else f"**{s['ratio_ingest_to_it']:.2f}** "
             f"({', '.join(f'{r:.2f}' for r in s['each_ratio'])})", cells(s)] for s in summaries.values()]
    print(f"\n### Ingest, {args.events:,} events on {args.partitions} partitions (median of {args.rounds})\n\n"
          f"{common.machine_line(facts)}\n")
    print(common.markdown_table(["", "rounds", "wall s", "each round", "events/s", "peak RSS MiB",
                                 "ingest events/s ÷ its", "table"], rows))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
