"""The exhaust command at two or more commits, on the same loaded program: does a change keep its speed and
its report's bytes?

Each commit is checked out in a git worktree of its own and run as a user runs it: `programusers submit`,
then `programusers exhaust --request-id` (DirectRunner, the default), from that worktree, on the program
`bench/exhaust.py --keep` loaded for the size. Rounds alternate the commits, so a slow moment of the box
falls on each alike. Per run: wall time of the exhaust command and the SHA-256 of the CSV in its zip.

    .venv/bin/python bench/exhaust.py --sizes 100000 --runners "" --stage-sizes "" --keep --reuse   # load
    .venv/bin/python bench/commits.py c2fe82c HEAD --rounds 3

`--stores local,azure,s3` runs each commit once per report store, rounds alternating over them: `azure`
and `s3` publish to the stack's Azurite and S3 server (a container or bucket made for the run) and the
report is read back from there. So the cost of an object store, paired with local output on the same
program:

    .venv/bin/python bench/commits.py HEAD --stores local,azure,s3 --rounds 3

Results: bench/results/commits.json and a Markdown table (median seconds, ratio to the first run).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyzipper
import redis as redis_lib
from exhaust import REDIS_DB, SALT, keyspace, loaded_key

import common
from programusers import settings
from programusers.crypto import SALT_ENV_VAR
from programusers.local import azurite, seaweedfs

REPO = Path(__file__).resolve().parents[1]
ZIP_PASSWORD = "bench-commits"


def worktree(commit: str, into: Path) -> Path:
    path = into / commit.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), commit], check=True,
                   capture_output=True)
    return path


def command(tree: Path, *argv: str) -> subprocess.CompletedProcess:
    """`programusers ARGV` with the code of `tree` (its own package first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree), SALT_ENV_VAR: SALT, "PROGRAMUSERS_ENCRYPTION_KEY": ZIP_PASSWORD,
           **azurite.environment(), **seaweedfs.environment()}
    return subprocess.run([sys.executable, "-m", "programusers", *argv], cwd=tree, env=env, capture_output=True,
                          text=True)


def run(tree: Path, program_id: str, size: int, output: Path, store: str = "local", container: str = "") -> dict:
    """One exhaust of the program; its report in `output`, or for an object store (the stack's Azurite or
    S3 server) under `output`'s name in `container`, then fetched into `output`."""
    requests = ["--job-request-table", "bench_commits_requests"]
    stores = ["--programs-keyspace", keyspace(size), "--consent-keyspace", keyspace(size), *requests]
    for step in (["init", *stores], ["submit", "--program-id", program_id, "--requested-by", "bench", *requests]):
        done = command(tree, *step)
        if done.returncode:
            raise SystemExit(f"{step[0]} failed at {tree.name}: {done.stderr[-2000:]}")
    request_id = done.stdout.split()[-1]
    started = time.perf_counter()
    where = {"local": ["--output", f"{output}/"],
             "azure": ["--store", "azure", "--output", f"azfs://{azurite.ACCOUNT}/{container}/{output.name}",
                       "--azure-blob-endpoint", azurite.ENDPOINT],
             "s3": ["--store", "s3", "--output", f"s3://{container}/{output.name}", "--s3-endpoint",
                    seaweedfs.ENDPOINT]}[store]
    done = command(tree, "exhaust", "--request-id", request_id, *where, "--redis-db", str(REDIS_DB), *stores)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"exhaust failed at {tree.name}: {done.stderr[-2000:]}")
    if store == "azure":
        blobs = azurite.DEVELOPMENT_ACCOUNT.client().get_container_client(container)
        [blob] = list(blobs.list_blobs(name_starts_with=f"{output.name}/"))
        output.mkdir(parents=True)
        (output / "report.zip").write_bytes(blobs.download_blob(blob.name).readall())
    elif store == "s3":
        client = seaweedfs.DEVELOPMENT_ACCOUNT.client()
        [found] = client.list_objects_v2(Bucket=container, Prefix=f"{output.name}/")["Contents"]
        output.mkdir(parents=True)
        client.download_file(container, found["Key"], str(output / "report.zip"))
    [report] = [path for path in output.rglob("*") if path.is_file()]
    with pyzipper.AESZipFile(report) as archive:
        archive.setpassword(ZIP_PASSWORD.encode())
        [member] = archive.namelist()
        data = archive.read(member)
    return {"seconds": round(seconds, 2), "csv_sha256": hashlib.sha256(data).hexdigest(),
            "lines": data.count(b"\n")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commits", nargs="+", help="git revisions; the first is the reference")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="local", help="report stores each commit runs with: local, azure, s3")
    args = parser.parse_args(argv)
    stores = args.stores.split(",")
    client = redis_lib.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=REDIS_DB)
    program_id = (client.get(loaded_key(args.size)) or b"").decode()
    if not program_id:
        raise SystemExit(f"no program of {args.size:,} rows is loaded: run bench/exhaust.py --sizes {args.size} "
                         "--keep first (see this file's docstring)")
    revisions = {c: subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", c], check=True,
                                   capture_output=True, text=True).stdout.strip() for c in args.commits}
    variants = [(c, store) for c in args.commits for store in stores]
    runs: dict[tuple, list[dict]] = {v: [] for v in variants}
    container = f"bench-{os.getpid()}"
    if "azure" in stores:
        azurite.DEVELOPMENT_ACCOUNT.create_container(container)
    if "s3" in stores:
        seaweedfs.DEVELOPMENT_ACCOUNT.create_bucket(container)
    with tempfile.TemporaryDirectory(prefix="bench-commits-") as scratch:
        trees = {c: worktree(revisions[c], Path(scratch)) for c in args.commits}
        try:
            for round_ in range(args.rounds):
                for commit, store in variants:
                    output = Path(scratch) / "out" / f"{revisions[commit]}-{store}-{round_}"
                    runs[commit, store].append(run(trees[commit], program_id, args.size, output, store, container))
                    print(f"{commit} ({revisions[commit]}) {store} round {round_ + 1}: {runs[commit, store][-1]}",
                          file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
            if "azure" in stores:
                azurite.DEVELOPMENT_ACCOUNT.client().delete_container(container)
            if "s3" in stores:  # what it holds goes first
                client = seaweedfs.DEVELOPMENT_ACCOUNT.client()
                for found in client.list_objects_v2(Bucket=container).get("Contents", []):
                    client.delete_object(Bucket=container, Key=found["Key"])
                client.delete_bucket(Bucket=container)
    reference = common.median([r["seconds"] for r in runs[variants[0]]])
    hashes = {r["csv_sha256"] for variant_runs in runs.values() for r in variant_runs}
    results = [{"commit": c, "revision": revisions[c], "store": store, "runs": runs[c, store],
                "median_s": common.median([r["seconds"] for r in runs[c, store]])} for c, store in variants]
    path = common.write_json("commits.json", {"machine": common.machine(), "size": args.size,
                                              "same_bytes": len(hashes) == 1, "results": results})
    print(f"\n### The exhaust command at {args.size:,} rows, DirectRunner, {args.rounds} alternating rounds\n")
    print(common.markdown_table(
        ["commit", "store", "median s", "each run s", "time / first", "same bytes"],
        [[f"{r['commit']} ({r['revision']})", r["store"], r["median_s"],
          ", ".join(str(x["seconds"]) for x in r["runs"]), f"{r['median_s'] / reference:.2f}",
          "yes" if len(hashes) == 1 else "no"] for r in results]))
    print(f"\nresults: {path}")
    return 0 if len(hashes) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
