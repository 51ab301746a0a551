"""Request API benchmark: requests per second and p50/p99 latency of `read` and `list` with 50 concurrent
clients, against a job_request table of 100,000 rows.

How to run (local stack up: `scripts/stack up`):

    .venv/bin/python bench/api.py --rows 100000 --clients 50 --seconds 20

The table (`bench_api_<pid>`, dropped at the end) holds 1,000 tags of 100 jobs each, spread over 20 users
in one channel, four in five SUCCESS with an `azfs://` location on the stack's Azurite account: so each
`read` of a finished job signs a SAS link (an HMAC, no call to the store) and writes its audit row, as in
production. `programusers serve --workers 2` runs in its own process group; the clients are threads of
this process, each with its own user's token, each asking for a job or a list of its own. Results:
bench/results/api.json and a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg2.extras import Json, execute_values

import common
from programusers import schema, settings
from programusers.io import postgres
from programusers.local import azurite

USERS, TAGS, CHANNEL = 20, 1000, "bench"


def load(dsn: str, table: str, rows: int) -> list[tuple[str, str, str]]:
    """The table's rows; returns (tag, request_id, user) of each."""
    with postgres.session(dsn) as connection:
        schema.init_postgres(connection, table, f"{table}_audit")
        jobs, values, now = [], [], datetime(2026, 12, 1)
        for n in range(rows):
            tag, user, request_id = f"program-{n % TAGS:04d}", f"user-{n % USERS:02d}", f"{n:032X}"
            done = n % 5 != 0
            location = f"azfs://{azurite.ACCOUNT}/reports/ml_reports/program-user-exhaust/{request_id}_20261201.zip"
            values.append((f"{tag}:{CHANNEL}", request_id, "program-user-exhaust", "SUCCESS" if done else "SUBMITTED",
                           Json({"type": "program-user-exhaust", "params": {"filters": []}}), user, CHANNEL,
                           now + timedelta(seconds=n), [location] if done else None, 0))
            jobs.append((tag, request_id, user))
        with connection, connection.cursor() as cursor:
            execute_values(cursor, f"INSERT INTO {table} (tag, request_id, job_id, status, request_data, requested_by, "
                                   "requested_channel, dt_job_submitted, download_urls, iteration) VALUES %s", values,
                           page_size=5000)
            cursor.execute(f"ANALYZE {table}")
    return jobs


def tokens(keys_dir: Path) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys_dir / "bench.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {f"user-{u:02d}": jwt.encode(
        {"sub": f"f:bench:user-{u:02d}", "exp": int(time.time()) + 3600,
         "roles": [{"role": "PROGRAM_MANAGER", "scope": [{"organisationId": CHANNEL}]}]},
        key, algorithm="RS256", headers={"kid": "bench"}) for u in range(USERS)}


def serve(table: str, keys_dir: Path, workers: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **azurite.environment(), "PROGRAMUSERS_AZURE_BLOB_ENDPOINT": azurite.ENDPOINT}
    process = subprocess.Popen(
        [sys.executable, "-m", "programusers", "serve", "--port", "0", "--workers", str(workers), "--token-keys",
         str(keys_dir), "--job-request-table", table, "--audit-table", f"{table}_audit"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in process.stderr:
        if found := re.search(r"listens on (http://\S+)", line):
            threading.Thread(target=process.stderr.read, daemon=True).start()  # its later lines, unread
            return process, found[1]
    raise SystemExit("the API did not start")


def load_test(url: str, route: str, jobs: list[tuple], tokens_: dict, clients: int, seconds: float) -> dict:
    """`clients` threads asking `route` for `seconds`; latencies of the answers that were 200."""
    latencies, errors, lock = [], [0], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            tag, request_id, user = jobs[rng.randrange(len(jobs))]
            path = (f"/request/read/{tag}?requestId={request_id}" if route == "read"
                    else f"/request/list/{tag}?limit=10")
            request = urllib.request.Request(url + path, headers={"x-authenticated-user-token": tokens_[user],
                                                                  "X-Channel-ID": CHANNEL})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answer.read()
                    ok = answer.status == 200
            except OSError:
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    latencies.sort()
    return {"route": route, "clients": clients, "requests": len(latencies), "errors": errors[0],
            "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1) if latencies else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2, help="the API's worker processes")
    args = parser.parse_args(argv)
    dsn, table = settings.POSTGRES_DSN, f"bench_api_{os.getpid()}"
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch:
        try:
            started = time.monotonic()
            jobs = load(dsn, table, args.rows)
            print(f"loaded {args.rows:,} rows in {time.monotonic() - started:.1f}s", file=sys.stderr)
            keys_dir = Path(scratch, "keys")
            keys_dir.mkdir()
            tokens_ = tokens(keys_dir)
            process, url = serve(table, keys_dir, args.workers)
            try:
                for route in ("read", "list"):
                    results.append(load_test(url, route, jobs, tokens_, args.clients, args.seconds))
                    print(results[-1], file=sys.stderr)
            finally:
                process.terminate()
                process.wait(timeout=30)
        finally:
            with postgres.session(dsn) as connection:
                postgres.query(connection, f"DROP TABLE IF EXISTS {table}, {table}_audit")
    path = common.write_json("api.json", {"machine": common.machine(), "rows": args.rows, "workers": args.workers,
                                          "seconds": args.seconds, "results": results})
    print(f"\n### The request API, {args.rows:,} jobs, {args.clients} concurrent clients, "
          f"{args.workers} worker processes\n")
    print(common.markdown_table(["route", "requests/s", "p50 ms", "p99 ms", "requests", "errors"],
                                [[r["route"], r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["requests"],
                                  r["errors"]] for r in results]))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
