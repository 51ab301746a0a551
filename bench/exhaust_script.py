"""Exhaust baseline: one program's report by a tuned single-process script, without Beam.

What a data engineer would write by hand, to measure the exhaust pipeline against. On the data that
bench/exhaust.py loads for a size N (keyspace `bench_exhaust_<N>`, Redis db 13, salt "bench-salt") and
the request the bench runs (the program, no other filter), it:
  1. reads the program's enrollment partition, paged, and keeps the rows the request's filter predicates
     match (programusers.filters);
  2. reads their users' consent for the program, 50 users a query (`user_id IN ?`), 16 queries in flight;
  3. reads the consenting users' profiles from the user cache, pipelined HMGETs;
  4. builds each report row with programusers.report_rows (PII rules, decryption with PlatformCipher, quoting,
     sort key, CSV line), sorts them all in memory and writes one CSV: the same bytes as the report
     merge.merge_shards writes from the pipeline's shards.
Nothing here imports Beam (programusers.io and programusers.transforms do), so the process's memory is
the script's own.

How to run, on a size a bench run loaded and kept:

    .venv/bin/python bench/exhaust.py --sizes 10000 --runners "" --keep    # load only
    .venv/bin/python bench/exhaust_script.py --size 10000 --output /tmp/baseline.csv

`bench/exhaust.py --baseline` runs it beside the pipelines, in a process of its own. It prints one JSON
object: wall seconds (connecting to the file closed; the interpreter's start and imports left out, as
the pipeline's time leaves them out), each phase's seconds, rows, bytes, and its peak RSS sampled the
way bench/common.py's PeakRss samples (plus the kernel's exact peak, getrusage).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from datetime import datetime

import redis
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import RoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

import common
from programusers import filters, report_rows, schema, settings
from programusers.crypto import PlatformCipher
from programusers.model_config import default_model_config
from programusers.report import job_request

# As bench/exhaust.py loads them (not imported: it imports Beam).
KEYSPACE_PREFIX, REDIS_DB, SALT = "bench_exhaust", 13, "bench-salt"
FETCH_SIZE = 1000  # enrollment rows a page, the pipeline's default (--cassandra-fetch-size)
USERS_PER_QUERY, IN_FLIGHT = 50, 16  # the pipeline's consent lookups
REDIS_BATCH = 1000  # HMGETs a pipelined round trip
USER_KEY_PREFIX = "user:"


def connect() -> tuple[Cluster, object]:
    # Plain tuples: the driver's default builds a namedtuple class per result, which costs more than a small query.
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()), row_factory=tuple_factory)
    cluster = Cluster(settings.cassandra_hosts(settings.CASSANDRA_HOSTS), port=settings.CASSANDRA_PORT,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return cluster, cluster.connect()


def read_enrollments(session, keyspace: str, program_id: str) -> list[dict]:
    """The program's partition, every row as a dict. The driver's Date and map values are used as they
    come: the filters and report rows read them as they read date and dict."""
    query = session.prepare(f"SELECT {', '.join(report_rows.ENROLLMENT_COLUMNS)} "
                            f"FROM {keyspace}.{schema.ENROLLMENT_TABLE} WHERE program_id = ?")
    query.fetch_size = FETCH_SIZE
    return [dict(zip(report_rows.ENROLLMENT_COLUMNS, values)) for values in session.execute(query, (program_id,))]


def read_consents(session, keyspace: str, program_id: str, user_ids: list[str]) -> dict[str, dict]:
    """user id -> {status, last_updated_on} of the user's latest consent row for the program (any consumer),
    as program_reads.consent_of picks it."""
    query = session.prepare(f"SELECT user_id, object_id, status, last_updated_on "
                            f"FROM {keyspace}.{schema.CONSENT_TABLE} WHERE user_id IN ?")
    chunks = [(user_ids[i:i + USERS_PER_QUERY],) for i in range(0, len(user_ids), USERS_PER_QUERY)]
    consents: dict[str, dict] = {}
    for _, rows in execute_concurrent_with_args(session, query, chunks, concurrency=IN_FLIGHT,
                                                results_generator=True):
        for user_id, object_id, status, updated in rows:
            held = consents.get(user_id)
            if object_id == program_id and (held is None or (updated or datetime.min) >
                                            (held["last_updated_on"] or datetime.min)):
                consents[user_id] = {"status": status, "last_updated_on": updated}
    return consents


def read_profiles(client: redis.Redis, user_ids: list[str]) -> dict[str, dict]:
    """user id -> its cached profile's fields that are set, for the users that have one."""
    profiles = {}
    for start in range(0, len(user_ids), REDIS_BATCH):
        batch = user_ids[start:start + REDIS_BATCH]
        pipe = client.pipeline(transaction=False)
        for user_id in batch:
            pipe.hmget(USER_KEY_PREFIX + user_id, report_rows.PROFILE_FIELDS)
        for user_id, values in zip(batch, pipe.execute()):
            if any(v is not None for v in values):  # all None: no such key
                profiles[user_id] = {f: v for f, v in zip(report_rows.PROFILE_FIELDS, values) if v is not None}
    return profiles


def run(size: int, program_id: str, output: str) -> dict:
    """Writes the program's report to `output`; returns its figures."""
    config = default_model_config()
    request = filters.parse_request(job_request.request_data(program_id))
    space, phases = f"{KEYSPACE_PREFIX}_{size}", {}
    with common.PeakRss() as rss:
        started = time.perf_counter()
        cluster, session = connect()
        client = redis.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=REDIS_DB, decode_responses=True)
        try:
            with common.timed(phases, "read_s"):
                rows = read_enrollments(session, space, program_id)
            # Program-wide, as the pipeline decides it: any of its rows asking makes every row ask.
            asks_for_consent = any(row["pii_consent_required"] for row in rows)
            rows = [row for row in rows if request.matches(row)]
            consents, profiles = {}, {}
            if asks_for_consent:
                with common.timed(phases, "consent_s"):
                    consents = read_consents(session, space, program_id, [row["user_id"] for row in rows])
                with common.timed(phases, "user_cache_s"):
                    profiles = read_profiles(client, [u for u, c in consents.items() if report_rows.consent_active(c)])
        finally:
            cluster.shutdown()
            client.close()
        with common.timed(phases, "build_s"):
            cipher, keyed_lines = PlatformCipher(SALT), []
            for row in rows:
                report_row, _ = report_rows.build_report_row(config, row, asks_for_consent=asks_for_consent,
                                                             consent=consents.get(row["user_id"]),
                                                             profile=profiles.get(row["user_id"]), cipher=cipher)
                keyed_lines.append((report_rows.sort_key(config, report_row),
                                    report_rows.csv_line(report_row.values())))
        with common.timed(phases, "sort_write_s"):
            keyed_lines.sort()  # ties on the sort key broken by the whole line, as the pipeline's shards are
            with open(output, "w", encoding="utf-8", newline="") as out:  # csv_line ends lines with \r\n
                out.write(report_rows.csv_line(report_rows.header(asks_for_consent, config)))
                out.writelines(line for _, line in keyed_lines)
        wall = time.perf_counter() - started
    return {"runner": "baseline script (no Beam)", "wall_s": round(wall, 3), "rows": len(keyed_lines),
            "rows_per_s": round(len(keyed_lines) / wall), "csv_bytes": os.path.getsize(output),
            "consents_found": len(consents), "profiles_found": len(profiles), "phases": phases,
            "peak_rss_mib": rss.summary()["bench (submitter, in-process workers)"],
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def loaded_program_id(size: int) -> str:
    """The program of a size bench/exhaust.py loaded completely (its `bench:loaded:<size>` key)."""
    value = redis.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=REDIS_DB).get(f"bench:loaded:{size}")
    if not value:
        raise SystemExit(f"size {size} is not loaded: run bench/exhaust.py --sizes {size} --runners '' --keep")
    return value.decode()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True, help="the loaded size (keyspace bench_exhaust_<size>)")
    parser.add_argument("--program-id", help="default: the program bench/exhaust.py loaded for the size")
    parser.add_argument("--output", required=True, help="the CSV file to write")
    args = parser.parse_args(argv)
    # The driver steps down from protocol versions Cassandra does not speak, with a warning each time.
    logging.getLogger("cassandra.cluster").addFilter(
        lambda record: not str(record.msg).startswith("Downgrading core protocol version"))
    result = run(args.size, args.program_id or loaded_program_id(args.size), args.output)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
