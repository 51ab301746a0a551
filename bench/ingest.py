"""Ingest benchmark: Kafka -> Beam ingest -> Cassandra, against a plain cassandra-driver baseline.

How to run (local stack up: `scripts/stack up`):

    .venv/bin/python bench/ingest.py                      # 100,000 events, 3 runs, PrismRunner and DirectRunner
    .venv/bin/python bench/ingest.py --events 20000 --runs 1 --runners PrismRunner

It generates the sample (programusers.sample_data) and produces its events to a fresh single-partition
topic. Each run, per runner, side by side:
  1. a read-only pipeline (the backfill's reader, kafka.ReadOffsetRanges -> count): the time to read,
     startup included;
  2. `programusers.pipelines.ingest.run` as a backfill of the events: end-to-end events/s and its counters;
  3. the baseline: the mapper's mutations (events.parse_event) written by execute_concurrent_with_args with
     the sink's prepared statements (enrollments.upsert_cql) and its concurrency, into another keyspace.
Medians over the runs go to bench/results/ingest.json and a Markdown table on stdout. The bench keyspaces
and topics are dropped at the end (--keep keeps them). Flink and Spark are reported as not measurable here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.runners.runner import PipelineState
from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

import common
from programusers import events, metrics, runners, schema, settings
from programusers.crypto import PlatformCipher
from programusers.io import cassandra_sink, kafka
from programusers.local.sample_data import generate, produce_events
from programusers.pipelines import ingest
from programusers.transforms import enrollments

BEAM_KEYSPACE, BASELINE_KEYSPACE = "bench_ingest", "bench_ingest_baseline"
EVENTS_PER_USER = 1.2  # the sample's mix: half join one program, 30 % the other, 20 % both


def stored_rows(session, keyspace: str, programs: list[str]) -> int:
    return sum(session.execute(f"SELECT count(*) FROM {keyspace}.{schema.ENROLLMENT_TABLE} WHERE program_id = %s",
                               [p], timeout=120).one()[0] for p in programs)


def read_only(runner: str, topic: str, count: int, max_read_time: int) -> dict:
    """The backfill's reader alone, over the same records: what reading costs, pipeline startup included."""
    options = runners.pipeline_options(runner)
    read = Metrics.counter("bench", "records_read")
    client = kafka.KafkaClientConfig(settings.KAFKA_BOOTSTRAP)
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | kafka.ReadOffsetRanges(client, kafka.plan_offset_ranges(client, topic, max_records=count),
                                  deadline=time.time() + max_read_time)
         | beam.Map(lambda _: read.inc()))
    result = pipeline.run()
    state = result.wait_until_finish()
    seconds = time.perf_counter() - started
    counted = sum(c.committed or c.attempted or 0 for c in result.metrics().query()["counters"]
                  if c.key.metric.name == "records_read")
    return {"state": str(state), "seconds": round(seconds, 2), "records": counted}


def run_ingest(runner: str, topic: str, *, dead_letters: str, count: int, max_read_time: int, batch_bytes: int
               ) -> dict:
    options = runners.pipeline_options(
        runner, [], input_topic=topic, dead_letter_topic=dead_letters,
        consumer_group=f"bench-ingest-{uuid.uuid4().hex[:8]}", programs_keyspace=BEAM_KEYSPACE,
        max_records=count, max_read_time=max_read_time, write_batch_bytes=batch_bytes)
    with common.PeakRss() as rss:
        started = time.perf_counter()
        result = ingest.run(options)
        state = result.wait_until_finish()
        seconds = time.perf_counter() - started
    return {"state": str(state), "seconds": round(seconds, 2), "events_per_s": round(count / seconds),
            "counters": metrics.counters(result), "peak_rss_mib": rss.summary()}


def baseline(session, mutations: list, concurrency: int) -> dict:
    """The sink's statements and concurrency, without Beam or Kafka: upserts grouped by column set."""
    groups: dict[tuple, list] = {}
    for m in mutations:
        columns = tuple(sorted(m.columns))
        groups.setdefault(columns, []).append([m.program_id, m.user_id, *(m.columns[c] for c in columns),
                                               m.timestamp_micros])
    statements = {}
    for columns in groups:
        statements[columns] = statement = session.prepare(enrollments.upsert_cql(BASELINE_KEYSPACE, columns))
        statement.consistency_level = ConsistencyLevel.LOCAL_QUORUM
        statement.is_idempotent = True
    started = time.perf_counter()
    for columns, params in groups.items():
        execute_concurrent_with_args(session, statements[columns], params, concurrency=concurrency,
                                     raise_on_first_error=True)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "events_per_s": round(len(mutations) / seconds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runners", default="PrismRunner,DirectRunner")
    parser.add_argument("--max-read-time", type=int, default=900, help="seconds; a guard against a stuck read")
    parser.add_argument("--write-concurrency", type=int, default=32, help="the ingest's default")
    parser.add_argument("--write-batch-bytes", type=int, default=cassandra_sink.MAX_BATCH_BYTES,
                        help="the ingest's --write-batch-bytes (0: a request per statement, as the baseline)")
    parser.add_argument("--unbatched", action="store_true",
                        help="each run also runs the ingest with --write-batch-bytes 0, for comparison")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the bench keyspaces and topics")
    args = parser.parse_args(argv)
    chosen = args.runners.split(",")

    cluster, session = common.LOCAL_CASSANDRA.connect()
    facts = common.machine(session)
    run_id = uuid.uuid4().hex[:8]
    topic, dead_letters = f"bench.programusers.{run_id}.raw", f"bench.programusers.{run_id}.failed"
    try:
        for keyspace in (BEAM_KEYSPACE, BASELINE_KEYSPACE):
            schema.init_cassandra(session, keyspace, keyspace, settings.REPLICATION)
        # The profiles' salt is irrelevant to the ingest; events carry no encrypted field.
        sample = generate(math.ceil(args.events / EVENTS_PER_USER) + 100, args.seed, PlatformCipher("bench"))
        sample_events = sample.events[:args.events]
        programs = sorted({e["programId"] for e in sample_events})
        common.create_topics([topic, dead_letters])
        produced = time.perf_counter()
        produce_events(sample_events, kafka.KafkaClientConfig(settings.KAFKA_BOOTSTRAP), topic)
        produce_seconds = time.perf_counter() - produced
        payloads = [json.dumps(e).encode() for e in sample_events]
        parsing = time.perf_counter()
        mutations = [events.parse_event(p, 0) for p in payloads]
        parse_seconds = time.perf_counter() - parsing
        print(f"{len(payloads)} events produced in {produce_seconds:.1f}s; parse_event {parse_seconds:.2f}s",
              file=sys.stderr)

        runs = {runner: [] for runner in chosen}
        for n in range(args.runs):
            for runner in chosen:
                record = {"run": n + 1}
                record["read_only"] = read_only(runner, topic, args.events, args.max_read_time)
                session.execute(f"TRUNCATE {BEAM_KEYSPACE}.{schema.ENROLLMENT_TABLE}", timeout=120)
                record["ingest"] = run_ingest(runner, topic, dead_letters=dead_letters, count=args.events,
                                              max_read_time=args.max_read_time, batch_bytes=args.write_batch_bytes)
                record["ingest"]["rows_stored"] = stored_rows(session, BEAM_KEYSPACE, programs)
                if args.unbatched:
                    session.execute(f"TRUNCATE {BEAM_KEYSPACE}.{schema.ENROLLMENT_TABLE}", timeout=120)
                    record["unbatched"] = run_ingest(runner, topic, dead_letters=dead_letters, count=args.events,
                                                     max_read_time=args.max_read_time, batch_bytes=0)
                session.execute(f"TRUNCATE {BASELINE_KEYSPACE}.{schema.ENROLLMENT_TABLE}", timeout=120)
                record["baseline"] = baseline(session, mutations, args.write_concurrency)
                record["baseline"]["rows_stored"] = stored_rows(session, BASELINE_KEYSPACE, programs)
                record["ratio"] = round(record["ingest"]["events_per_s"] / record["baseline"]["events_per_s"], 3)
                if args.unbatched:
                    record["ratio_unbatched"] = round(
                        record["unbatched"]["events_per_s"] / record["baseline"]["events_per_s"], 3)
                runs[runner].append(record)
                print(json.dumps({runner: record}), file=sys.stderr)
    finally:
        if not args.keep:
            for keyspace in (BEAM_KEYSPACE, BASELINE_KEYSPACE):
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
            try:
                common.delete_topics([topic, dead_letters])
            except Exception as exc:  # a topic never created
                print(f"topic cleanup: {exc}", file=sys.stderr)
        cluster.shutdown()

    summary = {}
    for runner, records in runs.items():
        summary[runner] = {
            "ingest_seconds": common.median(r["ingest"]["seconds"] for r in records),
            "ingest_events_per_s": common.median(r["ingest"]["events_per_s"] for r in records),
            "read_only_seconds": common.median(r["read_only"]["seconds"] for r in records),
            "baseline_seconds": common.median(r["baseline"]["seconds"] for r in records),
            "baseline_events_per_s": common.median(r["baseline"]["events_per_s"] for r in records),
            "ratio": common.median(r["ratio"] for r in records),
            **({"unbatched_events_per_s": common.median(r["unbatched"]["events_per_s"] for r in records),
                "ratio_unbatched": common.median(r["ratio_unbatched"] for r in records)} if args.unbatched else {}),
            "all_done": all(r["ingest"]["state"] == PipelineState.DONE for r in records),
            "counters": records[-1]["ingest"]["counters"],
            "peak_rss_mib": records[-1]["ingest"]["peak_rss_mib"]}
    payload = {"machine": facts, "events": args.events, "runs": args.runs, "write_concurrency": args.write_concurrency,
               "write_batch_bytes": args.write_batch_bytes,
               "parse_event_seconds": round(parse_seconds, 2), "summary": summary, "details": runs,
               "not_measured": {r: common.UNAVAILABLE[r] for r in ("FlinkRunner", "SparkRunner")}}
    path = common.write_json("ingest.json", payload)

    rows = []
    for runner, s in summary.items():
        rows.append([runner, f"{s['ingest_seconds']:.1f}", f"{s['ingest_events_per_s']:,}",
                     f"{s['read_only_seconds']:.1f}",
                     f"{s['baseline_events_per_s']:,}", f"{s['ratio']:.2f}",
                     f"{s['ratio_unbatched']:.2f}" if args.unbatched else "—",
                     ", ".join(f"{k}={v}" for k, v in sorted(s["counters"].items()))])
    for runner, why in payload["not_measured"].items():
        rows.append([runner, "—", "—", "—", "—", "—", "—", why])
    print(f"\n### Ingest, {args.events:,} events (median of {args.runs})\n\n{common.machine_line(facts)}\n")
    print(common.markdown_table(
        ["runner", "ingest s", "events/s end to end", "read-only pipeline s", "baseline events/s (driver)",
         "ratio ingest/baseline", "ratio unbatched/baseline", "counters"], rows))
    print(f"\nparse_event alone: {parse_seconds:.2f}s for {args.events:,} events; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
