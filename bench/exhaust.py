"""Exhaust benchmark: one program's report at several sizes, per runner, with per-stage timings.

How to run (local stack up: `scripts/stack up`):

    .venv/bin/python bench/exhaust.py --sizes 10000,100000
    .venv/bin/python bench/exhaust.py --sizes 10000 --runners DirectRunner --profile   # + pyinstrument of build

For each size N a program asking for PII consent gets N enrollment rows (the ingest's own mapping of the
sample generator's events), half its users an active consent (a quarter revoked, a quarter none, one in
ten also a consent for another program) and every user a hash in the user cache. They are generated and
loaded 10,000 users at a time (the loader's memory stays flat; writes that time out are retried after a
pause) straight into a keyspace per size, `bench_exhaust_<N>`, and Redis db 13, dropped/flushed at the
end. `--keep` keeps them and `--reuse` skips loading a size kept by an earlier run:

    .venv/bin/python bench/exhaust.py --sizes 1000000 --runners DirectRunner --keep
    .venv/bin/python bench/exhaust.py --sizes 1000000 --runners PrismRunner --reuse

Per runner (DirectRunner in process, DirectRunner with 2 worker processes, PrismRunner with the SDK worker in
this process (LOOPBACK), PrismRunner handing the bundles to a Python SDK worker pool started for the run
(EXTERNAL, programusers/local/worker_pool.py)): the pipeline
(`programusers.pipelines.exhaust.run` to its end) wall time, then `merge.merge_shards` into a CSV and into an AES zip,
rows/s and the peak RSS of every process involved. Then each stage alone on the same data, with the
project's own DoFns and functions: read, consent lookups, user cache, decrypt, report-row building, sort +
shard write. Results: bench/results/exhaust.json and Markdown tables.

`--baseline` also runs bench/exhaust_script.py, the same report by a tuned single-process script without
Beam, in a fresh process after the runners of each size, checks that it wrote the same bytes as each
runner's CSV, and gives each runner's time (pipeline + merge into the CSV) and peak RSS (its processes'
peaks added up) over the script's. `--rounds N` runs the runners and the script N times, one after the
other, and gives each runner's median ratios (each to the script of its own round):

    .venv/bin/python bench/exhaust.py --sizes 10000 --runners DirectRunner --baseline --rounds 3
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial

import redis as redis_lib
from cassandra import InvalidRequest
from cassandra.concurrent import execute_concurrent
from cassandra.query import BatchStatement, BatchType, tuple_factory

import common
from programusers import events, filters, metrics, report_rows, runners, schema, settings
from programusers.crypto import SALT_ENV_VAR, PlatformCipher
from programusers.io import cassandra, cassandra_sink, files, redis
from programusers.local.sample_data import (
    ORGS,
    consent_row,
    enrollment_event,
    hex_id,
    load_profiles,
    random_uuid,
    user_profile,
)
from programusers.local.worker_pool import WorkerPool
from programusers.model_config import default_model_config
from programusers.pipelines import exhaust
from programusers.report import job_request, merge
from programusers.report.archive import PasswordZip
from programusers.sealing import RunKey
from programusers.transforms import enrollments, program_reads, shards

KEYSPACE_PREFIX, REDIS_DB = "bench_exhaust", 13
SALT = "bench-salt"
POOL = "PrismRunner + SDK worker pool"
RUNNER_SETUPS = {  # label -> (runner, extra pipeline args)
    "DirectRunner": ("DirectRunner", []),  # the default: worker processes chosen by the program's size
    "DirectRunner in 1 process": ("DirectRunner", ["--worker-processes=1"]),
    "DirectRunner x2 processes": ("DirectRunner", ["--direct_num_workers=2",
                                                   "--direct_running_mode=multi_processing"]),
    "PrismRunner": ("PrismRunner", []),
    # Prism hands the bundles to an SDK worker started by a Python worker pool (EXTERNAL environment).
    POOL: ("PrismRunner", []),
}
# The stages alone use the pipeline's defaults.
_TUNING = exhaust.ExhaustOptions([])
USERS_PER_QUERY = _TUNING.consent_users_per_query
# A page read is the pipeline's lookup batch too.
FETCH, ROWS_PER_SHARD = _TUNING.cassandra_fetch_size, _TUNING.rows_per_shard
# What the pipeline does, timed alone; build_records (building the report rows) includes decrypt.
PIPELINE_STAGES = ("read_s", "consent_lookup_s", "user_cache_s", "build_records_s", "sort_write_s")
# The loader generates and writes this many users at a time, so its memory does not grow with the size.
CHUNK = 10_000
# Writes in flight. The stack's Cassandra applies at most concurrent_writes / 15 ms mutations a second
# (its commit log syncs in groups), about 530/s with its 8 threads: loading 1M needs more (see README).
WRITE_CONCURRENCY = 256
WRITE_SLICE = WRITE_CONCURRENCY
MAX_WRITE_BACKOFF_S = 30.0
BASELINE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exhaust_script.py")


def keyspace(size: int) -> str:
    """One keyspace per size, so a loaded size can be kept (--keep) and run again (--reuse)."""
    return f"{KEYSPACE_PREFIX}_{size}"


def _write(session, writes: list[tuple], backoff: float = 0.5) -> int:
    """Executes (statement, params) pairs. Writes that fail transiently (a timeout on a busy box) are sent
    again after a pause, doubling up to MAX_WRITE_BACKOFF_S: the load slows down instead of failing.
    Returns how many writes were retried."""
    retried = 0
    while writes:
        # In slices: when the driver has marked the host down (a busy box misses a heartbeat), each write
        # fails at once and starts the next one from its callback, and a long run of them overflows the
        # stack inside execute_concurrent.
        results = [result for start in range(0, len(writes), WRITE_SLICE) for result in execute_concurrent(
            session, writes[start:start + WRITE_SLICE], concurrency=WRITE_CONCURRENCY, raise_on_first_error=False)]
        failed = []
        for write, (ok, outcome) in zip(writes, results):
            if not ok:
                if not cassandra_sink.is_transient(outcome):
                    raise outcome
                failed.append(write)
        if failed:
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_WRITE_BACKOFF_S)
        retried += len(failed)
        writes = failed
    return retried


class _Loader:
    """Writes one chunk of generated users at a time: enrollments and consents to Cassandra, profiles to
    Redis. Prepared statements are kept across chunks."""

    def __init__(self, session, client, space: str):
        self._session, self._client, self._keyspace = session, client, space
        self._statements, self._prepared, self._consent = enrollments.EnrollmentStatements(space), {}, None
        self.retried = 0

    def _prepare(self, key: str):
        if key not in self._prepared:
            self._prepared[key] = self._session.prepare(self._statements.cql(key))
        return self._prepared[key]

    def write(self, mutations: list, consents: list[dict], profiles: dict[str, dict]) -> None:
        # Every enrollment lies in its program's partition: unlogged batches up to the sink's size, as the
        # ingest writes them. Cassandra applies such a batch as one mutation, and the stack's Cassandra
        # caps mutations a second (see WRITE_CONCURRENCY).
        writes, batch, program, size = [], None, None, 0
        for mutation in mutations:
            values = self._statements.values(mutation)
            if batch is None or size >= cassandra_sink.MAX_BATCH_BYTES or mutation.program_id != program:
                batch, program, size = BatchStatement(BatchType.UNLOGGED), mutation.program_id, 0
                writes.append((batch, None))
            batch.add(self._prepare(self._statements.key(mutation)), values)
            size += cassandra_sink.value_bytes(values)
        if consents and self._consent is None:
            columns = tuple(consents[0])  # every column of sample_data's consent rows
            self._consent = (columns, self._session.prepare(
                f"INSERT INTO {self._keyspace}.{schema.CONSENT_TABLE} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"))
        if consents:
            columns, statement = self._consent
            writes += [(statement, [c[k] for k in columns]) for c in consents]
        self.retried += _write(self._session, writes)
        load_profiles(self._client, profiles)


def program_of(size: int, seed: int) -> dict:
    return {"id": hex_id(random.Random(seed)), "externalId": f"PGM-BENCH-{size}", "name": "Bench Mission",
            "pii": True}


def consent_rows(size: int) -> int:
    """The consent rows `load` writes for `size` users (see there)."""
    return sum(1 for n in range(size) if n % 2 == 0 or n % 4 == 1) + (size + 9) // 10


def load(session, client, size: int, seed: int) -> dict:
    """Loads one program of `size` enrollments into keyspace(size) (emptied first), CHUNK users at a time:
    half the users have an active consent, a quarter a revoked one, one in ten also one for another
    program, and every user a profile in the cache."""
    space = keyspace(size)
    rng, cipher = random.Random(seed), PlatformCipher(SALT)
    program = program_of(size, seed)
    rng.getrandbits(96)  # the program id program_of drew
    other_program = hex_id(rng)
    schema.init_cassandra(session, space, space, settings.REPLICATION)
    session.execute(f"CREATE TABLE IF NOT EXISTS {space}.loaded (size int PRIMARY KEY, program_id text)")
    for table in (schema.ENROLLMENT_TABLE, schema.CONSENT_TABLE, "loaded"):
        session.execute(f"TRUNCATE {space}.{table}", timeout=120)
    client.delete(loaded_key(size))
    loader, timings = _Loader(session, client, space), {"generate_s": 0.0, "write_s": 0.0}
    for start in range(0, size, CHUNK):
        mutations, consents, profiles = [], [], {}
        generating = time.perf_counter()
        for n in range(start, min(start + CHUNK, size)):
            user_id, org = random_uuid(rng), rng.choice(ORGS)
            mutations.append(events.event_to_mutation(enrollment_event(rng, program, user_id, org), 0))
            if n % 2 == 0:
                consents.append(consent_row(rng, user_id, program["id"], org[0], "ACTIVE"))
            elif n % 4 == 1:
                consents.append(consent_row(rng, user_id, program["id"], org[0], "REVOKED"))
            if n % 10 == 0:
                consents.append(consent_row(rng, user_id, other_program, org[0], "ACTIVE"))
            profiles[user_id] = user_profile(rng, user_id, cipher)
        writing = time.perf_counter()
        loader.write(mutations, consents, profiles)
        timings["generate_s"] += writing - generating
        timings["write_s"] += time.perf_counter() - writing
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["writes_retried"] = loader.retried
    session.execute(f"INSERT INTO {space}.loaded (size, program_id) VALUES (%s, %s)", (size, program["id"]))
    client.set(loaded_key(size), program["id"])
    return {"program": program, "consent_rows": consent_rows(size), "timings": timings}


def loaded_key(size: int | str) -> str:
    return f"bench:loaded:{size}"


def loaded_program(session, client, size: int, seed: int) -> dict | None:
    """The program of a size a previous --keep run loaded completely with this seed, else None."""
    program = program_of(size, seed)
    if (client.get(loaded_key(size)) or b"").decode() != program["id"]:
        return None
    try:
        row = session.execute(f"SELECT program_id FROM {keyspace(size)}.loaded WHERE size = %s", (size,)).one()
    except InvalidRequest:  # no such keyspace
        return None
    return program if row and row[0] == program["id"] else None


def load_in_child(size: int, seed: int) -> dict:
    """`load` in a process of its own, so the loader is not counted in the bench's RSS."""
    cluster, session = common.LOCAL_CASSANDRA.connect()
    try:
        return load(session, redis_lib.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=REDIS_DB),
                    size, seed)
    finally:
        cluster.shutdown()


def sources(size: int) -> exhaust.ExhaustSources:
    return exhaust.ExhaustSources(cassandra=common.LOCAL_CASSANDRA, programs_keyspace=keyspace(size),
                                 consent_keyspace=keyspace(size),
                                 redis=redis.RedisConnection(settings.REDIS_HOST, settings.REDIS_PORT, REDIS_DB))


def run_pipeline(label: str, program_id: str, size: int, config, out_dir: str) -> dict:
    runner, extra = RUNNER_SETUPS[label]
    request = filters.parse_request(job_request.request_data(program_id))
    options = runners.pipeline_options(runner, extra)
    staging_dir = os.path.join(out_dir, f"shards-{label.replace(' ', '_')}-{size}")
    result = {"runner": label}
    now, key = datetime.now(UTC), RunKey()
    runners.collect_less()  # as the exhaust command does before its first request
    with common.PeakRss() as rss, contextlib.ExitStack() as pool:  # in a fresh process: this one is the submitter
        if label == POOL:  # its processes are children of this one: sampled as "python sdk worker"s
            options = runners.pipeline_options(runner, extra + pool.enter_context(
                WorkerPool(os.path.join(out_dir, "worker-pool.log"))).pipeline_args())
        with common.timed(result, "pipeline_s"):
            facts = exhaust.program_facts(request, sources(size), options)  # as the exhaust command does
            result["worker_processes"] = exhaust.worker_processes(options, facts)
            options = runners.with_worker_processes(options, result["worker_processes"])
            outcome = runners.run_and_wait(partial(exhaust.run, options, exhaust.ExhaustInputs(
                request=request, config=config, sources=sources(size), asks_for_consent=facts.asks_for_consent,
                staging_dir=staging_dir, shard_key=key.public)))
        with common.timed(result, "merge_csv_s"):
            merge.merge_shards(staging_dir, os.path.join(out_dir, "report.csv"), key=key, when=now)
        with common.timed(result, "merge_zip_s"):
            merge.merge_shards(staging_dir, os.path.join(out_dir, "report.zip"), key=key, when=now,
                               zipped=PasswordZip("bench-password", "report.csv"))
    files.remove_dir(staging_dir)
    result["total_s"] = round(result["pipeline_s"] + result["merge_zip_s"], 3)
    result["rows_per_s"] = round(size / result["total_s"])
    result["counters"] = metrics.counters(outcome)
    result["csv_bytes"] = os.path.getsize(os.path.join(out_dir, "report.csv"))
    result["csv_sha256"] = _sha256(os.path.join(out_dir, "report.csv"))
    result["peak_rss_mib"] = rss.summary()
    return result


def _run_and_exit(*args) -> dict:
    try:
        return run_pipeline(*args)
    finally:
        atexit._run_exitfuncs()  # Beam stops the Prism job server it started at exit; pool workers skip atexit


def run_in_child(*args) -> dict:
    """One pipeline in a fresh process: its peak RSS is its own, not what earlier runs left in ours."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(_run_and_exit, args)
        pool.close()
        pool.join()
    return result


def _sha256(path: str) -> str:
    with open(path, "rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()


def run_baseline(program_id: str, size: int, out_dir: str) -> dict:
    """bench/exhaust_script.py in a fresh interpreter, not a multiprocessing child: that would import this
    module, and Beam with it, so the script's peak RSS would not be its own."""
    path = os.path.join(out_dir, "baseline.csv")
    done = subprocess.run([sys.executable, BASELINE_SCRIPT, "--size", str(size), "--program-id", program_id,
                           "--output", path], stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout)
    result["csv_sha256"] = _sha256(path)
    return result


def run_rss_mib(peaks: dict[str, float]) -> float:
    """A pipeline run's processes' peaks added up (submitter, Prism, pool, SDK workers; not the stores)."""
    return round(sum(v for k, v in peaks.items()
                     if not k.startswith("store:") and "(sum" not in k and k != "bench process before the run"), 1)


def against_baseline(run: dict, base: dict) -> dict:
    """A runner's time (pipeline + merge into the CSV) and peak RSS, and their ratios to the script's."""
    seconds, rss = run["pipeline_s"] + run["merge_csv_s"], run_rss_mib(run["peak_rss_mib"])
    return {"runner": run["runner"], "total_s": round(seconds, 3), "peak_rss_mib": rss,
            "time_ratio": round(seconds / base["wall_s"], 3), "rss_ratio": round(rss / base["peak_rss_mib"], 3),
            "same_bytes": run["csv_sha256"] == base["csv_sha256"]}


def baseline_rows(size: int, number: int, round_: dict) -> list[list]:
    """The Markdown rows of one round of a size: the script, then each runner with its ratios to the script."""
    base = round_["baseline"]
    rows = [[f"{size:,}", number, base["runner"], f"{base['wall_s']:.2f}", f"{base['peak_rss_mib']:.0f}",
             "1.00", "1.00", "—"]]
    for run in round_["runs"]:
        ratios = against_baseline(run, base)
        rows.append([f"{size:,}", number, run["runner"], f"{ratios['total_s']:.2f}", f"{ratios['peak_rss_mib']:.0f}",
                     f"{ratios['time_ratio']:.2f}", f"{ratios['rss_ratio']:.2f}",
                     "yes" if ratios["same_bytes"] else "**no**"])
    return rows


def medians(rounds: list[dict]) -> list[dict]:
    """Per runner, over the rounds: the median time, RSS and ratios to the script of the same round."""
    by_runner: dict[str, list[dict]] = {}
    for round_ in rounds:
        by_runner.setdefault(round_["baseline"]["runner"], []).append(
            {"runner": round_["baseline"]["runner"], "total_s": round_["baseline"]["wall_s"],
             "peak_rss_mib": round_["baseline"]["peak_rss_mib"], "time_ratio": 1.0, "rss_ratio": 1.0,
             "same_bytes": True})
        for run in round_["runs"]:
            by_runner.setdefault(run["runner"], []).append(against_baseline(run, round_["baseline"]))
    return [{"runner": runner, "rounds": len(figures), "same_bytes": all(f["same_bytes"] for f in figures),
             **{k: common.median([f[k] for f in figures]) for k in ("total_s", "peak_rss_mib", "time_ratio",
                                                                    "rss_ratio")},
             "time_ratios": [f["time_ratio"] for f in figures]}
            for runner, figures in by_runner.items()]


def stages(size: int, program_id: str, config, profile_build: bool) -> dict:
    """Each stage alone, single-threaded, with the pipeline's own DoFns/functions and batch sizes."""
    connection = common.LOCAL_CASSANDRA
    timings, space = {}, keyspace(size)
    cql, values = program_reads.slice_queries(space, program_id, 1)[0]
    cluster, session = connection.connect(row_factory=tuple_factory)
    with common.timed(timings, "read_s"):  # as ReadAllFromCassandra reads a slice
        query = session.prepare(cql)
        query.fetch_size = FETCH
        plain = cassandra.plain_rows([column[3] for column in query.result_metadata])
        rows = [row for page in cassandra.pages(session, query, values)
                for row in program_reads.enrollment_rows(list(map(plain, page)))]
    cluster.shutdown()
    user_ids = [row["user_id"] for row in rows]
    batches = [user_ids[i:i + FETCH] for i in range(0, len(user_ids), FETCH)]

    with (program_reads.ConsentHandler(connection, space, program_id, USERS_PER_QUERY) as lookup,
          common.timed(timings, "consent_lookup_s")):
        consents = {user_id: consent for batch in batches for user_id, consent in lookup(batch).items()}

    active = [u for u in user_ids if report_rows.consent_active(consents.get(u))]
    with (redis.RedisHashHandler(redis.RedisConnection(settings.REDIS_HOST, settings.REDIS_PORT, REDIS_DB),
                                 exhaust.USER_KEY_PREFIX, report_rows.PROFILE_FIELDS) as hashes,
          common.timed(timings, "user_cache_s")):
        profiles = {id_: found for i in range(0, len(active), FETCH)
                    for id_, found in hashes(active[i:i + FETCH]).items()}

    cipher = PlatformCipher(SALT)
    secrets = [p[f] for p in profiles.values() for f in ("email", "phone") if p.get(f)]
    with common.timed(timings, "decrypt_s"):
        for secret in secrets:
            cipher.decrypt(secret)
    timings["decrypted_values"] = len(secrets)

    def build():
        return [report_rows.build_report_row(config, row, asks_for_consent=True,  # the bench's program asks
                                             consent=consents.get(row["user_id"]), profile=profiles.get(row["user_id"]),
                                             cipher=cipher)[0]
                for row in rows]

    with common.timed(timings, "build_records_s"):  # decrypt included
        built = build()
    if profile_build:
        from pyinstrument import Profiler
        with Profiler(interval=0.001) as profiler:
            build()
        timings["build_profile"] = profiler.output_text(unicode=False, color=False, show_all=False)

    with common.timed(timings, "sort_write_s"), tempfile.TemporaryDirectory() as shard_dir:
        # As _LookUpAndBuildFn's output and _WriteSortedShardsFn, rows_per_shard report rows a shard.
        keyed_lines = [(report_rows.sort_key(config, r), report_rows.csv_line(r.values())) for r in built]
        for start in range(0, len(keyed_lines), ROWS_PER_SHARD):
            shards.write_shard(os.path.join(shard_dir, "shard"), sorted(keyed_lines[start:start + ROWS_PER_SHARD]),
                               RunKey().public)
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runners", default=",".join(RUNNER_SETUPS))
    parser.add_argument("--stage-sizes", default="10000,100000",
                        help="sizes whose stages are also timed alone (they hold the whole sample in memory)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="pyinstrument the report-row building (needs it)")
    parser.add_argument("--keep", action="store_true", help="keep the sizes' keyspaces and the Redis db")
    parser.add_argument("--reuse", action="store_true", help="skip loading a size a --keep run loaded completely")
    parser.add_argument("--baseline", action="store_true",
                        help="also run bench/exhaust_script.py (no Beam) and give the runners' ratios to it")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of the runners (and the script), one after the other; medians of the ratios")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    stage_sizes = {int(s) for s in args.stage_sizes.split(",") if s}
    labels = [label for label in args.runners.split(",") if label]  # none: load (and --keep) only
    os.environ.setdefault(SALT_ENV_VAR, SALT)  # the workers decrypt with it (in process or forked)

    cluster, session = common.LOCAL_CASSANDRA.connect()
    client = redis_lib.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=REDIS_DB)
    facts = common.machine(session, client)
    config = default_model_config()
    results = []
    try:
        for size in sizes:
            seed = args.seed + size
            program = loaded_program(session, client, size, seed) if args.reuse else None
            if program:
                loaded = {"program": program, "consent_rows": consent_rows(size), "timings": "reused"}
            else:
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    loaded = pool.apply(load_in_child, (size, seed))
            print(f"size {size}: loaded {loaded['timings']}", file=sys.stderr)
            entry = {"size": size, "consent_rows": loaded["consent_rows"], "load": loaded["timings"], "rounds": []}
            for _ in range(args.rounds):
                round_ = {"runs": []}
                with tempfile.TemporaryDirectory(prefix="bench-exhaust-") as out_dir:
                    for label in labels:
                        round_["runs"].append(run_in_child(label, loaded["program"]["id"], size, config, out_dir))
                        print(f"size {size}: {round_['runs'][-1]}", file=sys.stderr)
                    if args.baseline:  # after the runners: their CSV is there to compare with
                        round_["baseline"] = run_baseline(loaded["program"]["id"], size, out_dir)
                        print(f"size {size}: {round_['baseline']}", file=sys.stderr)
                entry["rounds"].append(round_)
            if args.baseline:
                entry["medians"] = medians(entry["rounds"])
            if size in stage_sizes:
                entry["stages"] = stages(size, loaded["program"]["id"], config, args.profile)
                entry["stages"]["sum_s"] = round(sum(entry["stages"][s] for s in PIPELINE_STAGES), 3)
                print(f"size {size}: stages {({k: v for k, v in entry['stages'].items() if k != 'build_profile'})}",
                      file=sys.stderr)
            results.append(entry)
    finally:
        if not args.keep:
            for size in sizes:
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace(size)}", timeout=120)
                client.delete(loaded_key(size))
            if not client.keys(loaded_key("*")):  # the profiles are shared by every size a --keep run kept
                client.flushdb()
        cluster.shutdown()

    payload = {"machine": facts, "results": results,
               "not_measured": {r: common.UNAVAILABLE[r] for r in ("FlinkRunner", "SparkRunner")}}
    path = common.write_json("exhaust.json", payload)
    print(f"\n### Exhaust, one PII program, half its users consented\n\n{common.machine_line(facts)}\n")
    rows = []
    for entry in results:
        for run in (run for round_ in entry["rounds"] for run in round_["runs"]):
            rss = run["peak_rss_mib"]
            rss_text = ", ".join(f"{k.replace(' (in-process workers)', '')} {v:.0f}"
                                 for k, v in rss.items() if not k.startswith("store:") and "(sum" not in k)
            rows.append([f"{entry['size']:,}", run["runner"], f"{run['pipeline_s']:.1f}", f"{run['merge_zip_s']:.2f}",
                         f"{run['total_s']:.1f}", f"{run['rows_per_s']:,}", rss_text])
    for runner, why in payload["not_measured"].items():
        rows.append(["—", runner, "—", "—", "—", "—", why])
    print(common.markdown_table(["rows", "runner", "pipeline s", "merge+zip s", "total s", "rows/s",
                                 "peak RSS MiB (processes)"], rows))
    if args.baseline:
        print("\nPipelines against the baseline script (no Beam), same run; time: pipeline + merge into the CSV "
              "(the script writes the CSV); RSS: the peaks of the run's processes added up:\n")
        print(common.markdown_table(
            ["rows", "round", "runner", "total s", "peak RSS MiB", "time / baseline", "RSS / baseline",
             "same CSV bytes"],
            [row for entry in results for number, round_ in enumerate(entry["rounds"], 1)
             for row in baseline_rows(entry["size"], number, round_)]))
        print("\nMedians over the rounds (each ratio to the script of its own round):\n")
        print(common.markdown_table(
            ["rows", "runner", "rounds", "total s", "peak RSS MiB", "time / baseline", "(each round)",
             "RSS / baseline", "same CSV bytes"],
            [[f"{entry['size']:,}", m["runner"], m["rounds"], f"{m['total_s']:.2f}", f"{m['peak_rss_mib']:.0f}",
              f"{m['time_ratio']:.2f}", ", ".join(f"{r:.2f}" for r in m["time_ratios"]), f"{m['rss_ratio']:.2f}",
              "yes" if m["same_bytes"] else "**no**"] for entry in results for m in entry["medians"]]))
    stage_names = ["read_s", "consent_lookup_s", "user_cache_s", "decrypt_s", "build_records_s", "sort_write_s",
                   "sum_s"]
    timed = [e for e in results if "stages" in e]
    print("\nStages alone, one thread, seconds (build includes decrypt; sum: the pipeline's stages):\n")
    print(common.markdown_table(["rows", *[s[:-2] for s in stage_names]],
                                [[f"{e['size']:,}", *[e["stages"][s] for s in stage_names]] for e in timed]))
    print("\nPipeline time / sum of its stages:\n")
    print(common.markdown_table(["rows", "runner", "pipeline s", "stages s", "ratio"], [
        [f"{e['size']:,}", run["runner"], run["pipeline_s"], e["stages"]["sum_s"],
         f"{run['pipeline_s'] / e['stages']['sum_s']:.2f}"]
        for e in timed for run in e["rounds"][-1]["runs"]]))
    print(f"\nresults: {path}")
    for entry in results:
        if "build_profile" in entry.get("stages", {}):
            print(f"\npyinstrument, report-row building, {entry['size']:,} rows:\n{entry['stages']['build_profile']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
