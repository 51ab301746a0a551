"""Ingest baseline: a topic's events into program_enrollment by a tuned hand-written script, without Beam.

What a data engineer would write by hand instead of the ingest pipeline, to measure it against (issue 27).
On a topic bench/ingest.py filled, it:
  1. reads every partition from its earliest offset to its end offset of the moment, with confluent-kafka
     (read_committed, batches of 10,000 messages a call);
  2. maps each event with the project's own programusers.events.parse_event (SPEC §2): an upsert of the
     columns the event carries, or a delete, stamped from updatedAt, createdAt, else the Kafka timestamp;
  3. groups the statements into UNLOGGED batches of 50 per program_id (one prepared INSERT per column set),
     and runs them with the driver's execute_concurrent, 32 in flight, LOCAL_QUORUM.
It keeps no dead letters (a bad event is counted and skipped), commits no offset and retries nothing: a
failed write stops it. Nothing here imports Beam, so its time and memory are the script's own.

How to run, on a topic and keyspace a bench run kept:

    .venv/bin/python bench/ingest.py --events 10000 --keep      # prints the topic and keyspaces
    .venv/bin/python bench/ingest_script.py --topic TOPIC --keyspace bench_ingest_script

`bench/ingest.py --baseline` runs it beside the ingest, in a process of its own. It prints one JSON object:
wall seconds (connecting to the last write acknowledged; the interpreter's start and imports are measured
by the bench, which times the whole process), each phase's seconds, the counts, and its peak RSS.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from collections import defaultdict

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent
from cassandra.policies import RoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType
from confluent_kafka import Consumer, TopicPartition

import common
from programusers import events, settings
from programusers.schema import ENROLLMENT_TABLE

BATCH_STATEMENTS, IN_FLIGHT = 50, 32
FETCH_MESSAGES = 10_000  # messages a consume() call returns at most


def read_topic(topic: str) -> list:
    """Every message of `topic` from the earliest offset to the end offset at start, all partitions."""
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": "bench.ingest-script",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        messages = []
        while ends:
            for message in consumer.consume(FETCH_MESSAGES, timeout=1.0):
                if message.error():
                    raise RuntimeError(f"reading {topic}: {message.error()}")
                if message.offset() < ends.get(message.partition(), -1):
                    messages.append(message)
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
        return messages
    finally:
        consumer.close()


def mutations_of(messages: list) -> tuple[list, int]:
    """(upserts and deletes in topic order, events skipped as bad)."""
    mapped, bad = [], 0
    for message in messages:
        kafka_millis = message.timestamp()[1]
        arrival = kafka_millis * 1000 if kafka_millis >= 0 else time.time_ns() // 1000
        result = events.parse_event(message.value(), arrival)
        if isinstance(result, events.DeadLetter):
            bad += 1
        else:
            mapped.append(result)
    return mapped, bad


class Statements:
    """One prepared statement per column set (partial upserts), and one DELETE; all stamped USING TIMESTAMP."""

    def __init__(self, session, keyspace: str):
        self._session, self._table, self._prepared = session, f"{keyspace}.{ENROLLMENT_TABLE}", {}

    def _prepare(self, key, cql: str):
        statement = self._prepared[key] = self._session.prepare(cql)
        statement.consistency_level = ConsistencyLevel.LOCAL_QUORUM
        return statement

    def bound(self, mutation):
        if isinstance(mutation, events.EnrollmentDelete):
            statement = self._prepared.get(None) or self._prepare(
                None, f"DELETE FROM {self._table} USING TIMESTAMP ? WHERE program_id = ? AND user_id = ?")
            return statement.bind((mutation.timestamp_micros, mutation.program_id, mutation.user_id))
        columns = tuple(sorted(mutation.columns))
        statement = self._prepared.get(columns)
        if statement is None:
            names = ("program_id", "user_id", *columns)
            statement = self._prepare(columns, f"INSERT INTO {self._table} ({', '.join(names)}) "
                                               f"VALUES ({', '.join('?' * len(names))}) USING TIMESTAMP ?")
        return statement.bind((mutation.program_id, mutation.user_id, *(mutation.columns[c] for c in columns),
                               mutation.timestamp_micros))


def batches_of(statements: Statements, mutations: list) -> list[BatchStatement]:
    """UNLOGGED batches of BATCH_STATEMENTS statements, each of one program's partition, in topic order."""
    by_program = defaultdict(list)
    for mutation in mutations:
        by_program[mutation.program_id].append(mutation)
    batches = []
    for group in by_program.values():
        for start in range(0, len(group), BATCH_STATEMENTS):
            batch = BatchStatement(BatchType.UNLOGGED, consistency_level=ConsistencyLevel.LOCAL_QUORUM)
            for mutation in group[start:start + BATCH_STATEMENTS]:
                batch.add(statements.bound(mutation))
            batches.append(batch)
    return batches


def run(topic: str, keyspace: str) -> dict:
    phases = {}
    with common.PeakRss() as rss:
        started = time.perf_counter()
        profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()))
        cluster = Cluster(settings.cassandra_hosts(settings.CASSANDRA_HOSTS), port=settings.CASSANDRA_PORT,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        try:
            session = cluster.connect()
            with common.timed(phases, "read_s"):
                messages = read_topic(topic)
            with common.timed(phases, "map_s"):
                mutations, bad = mutations_of(messages)
            with common.timed(phases, "bind_s"):
                batches = batches_of(Statements(session, keyspace), mutations)
            with common.timed(phases, "write_s"):
                execute_concurrent(session, [(batch, ()) for batch in batches], concurrency=IN_FLIGHT,
                                   raise_on_first_error=True)
        finally:
            cluster.shutdown()
        wall = time.perf_counter() - started
    return {"runner": "tuned script (no Beam)", "wall_s": round(wall, 3), "events": len(messages),
            "events_per_s": round(len(messages) / wall), "mutations": len(mutations), "bad_events": bad,
            "batches": len(batches), "phases": phases,
            "peak_rss_mib": rss.summary()["bench (submitter, in-process workers)"],
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True, help="the events' topic, read from its start to its end")
    parser.add_argument("--keyspace", required=True, help="where program_enrollment is written")
    args = parser.parse_args(argv)
    # The driver steps down from protocol versions Cassandra does not speak, with a warning each time.
    logging.getLogger("cassandra.cluster").addFilter(
        lambda record: not str(record.msg).startswith("Downgrading core protocol version"))
    print(json.dumps(run(args.topic, args.keyspace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
