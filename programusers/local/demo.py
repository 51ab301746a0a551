"""`programusers demo`: the whole product on the local stack, stage by stage.

init -> generate a sample -> produce its events to Kafka -> ingest them (bounded) -> submit two report
requests -> exhaust -> show where each report is and its first lines. Every stage is idempotent (same
seed, upserts, a fresh demo topic), so the demo is safe to run again. With `--store azure` the reports go
to the stack's Azurite, and each is fetched through the signed link `programusers link` prints, with a
plain HTTP client, as a program manager's browser would.
"""
import contextlib
import csv
import io
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyzipper

from programusers import report_rows, schema, settings
from programusers.crypto import PlatformCipher
from programusers.io.azure_blob import AzureBlobAccount
from programusers.io.kafka import KafkaClientConfig
from programusers.local import azurite, demo_api, sample_data, seaweedfs
from programusers.model_config import DEFAULT_STORAGE_VARIABLES
from programusers.options import StoreOptions
from programusers.report import job_request
from programusers.report.job_request import JOB_ID

DEMO_SALT = "demo-salt-not-for-production"
SECURE_ENV = settings.stack_dir() / "secure" / "env"
DEMO_PASSWORD = "Demo-Zip-Pass-1"
DEMO_CONTAINER = "demo-reports"
CHANNEL = "demo"
# The demo shows a report's first lines; personal columns are masked so no terminal or CI log holds them.
MASKED_COLUMNS = ("User Name(On user consent)", "Mobile number(On user consent)", "Email ID(On user consent)")


class Stages:
    """One progress line per stage: its number, what it did, counts and elapsed time."""

    def __init__(self, total: int):
        self.total, self.number, self.started = total, 0, time.monotonic()

    def run(self, title: str, action):
        self.number += 1
        print(f"[{self.number}/{self.total}] {title} ...", flush=True)
        began = time.monotonic()
        summary = action()
        print(f"      {summary} ({time.monotonic() - began:.1f}s)", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def progress_bar(total: int, width: int = 30):
    """A bar redrawn in place on a terminal; in a log (CI) only its last state."""
    interactive = sys.stderr.isatty()

    def show(done: int) -> None:
        if done == total or (interactive and done % max(1, total // 50) == 0):
            filled = width * done // total
            print(f"\r      [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr,
                  flush=True)
            if done == total:
                print(file=sys.stderr)
    return show


def programusers(*args: str, capture: bool = False) -> str:
    """Runs a `programusers` command as an operator would; fails the demo on a non-zero exit."""
    done = subprocess.run([sys.executable, "-m", "programusers", *args], text=True,
                          stdout=subprocess.PIPE if capture else None, check=False)
    if done.returncode:
        raise SystemExit(f"demo stopped: `programusers {' '.join(args[:1])}` exited {done.returncode}")
    return done.stdout or ""


def recreate_topic(kafka: KafkaClientConfig, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.python())
    if topic in admin.list_topics(timeout=30).topics:
        admin.delete_topics([topic])[topic].result(timeout=30)
        while topic in admin.list_topics(timeout=30).topics:
            time.sleep(0.5)


def read_report(path: Path, password: str | None) -> list[list[str]]:
    if path.suffix == ".zip":
        with pyzipper.AESZipFile(path) as archive:
            archive.setpassword(password.encode())
            text = archive.read(archive.namelist()[0]).decode("utf-8")
    else:
        text = path.read_text("utf-8")
    return list(csv.reader(io.StringIO(text)))


def azure_account() -> AzureBlobAccount:
    """The stack's Azurite account: the secure profile's (its variables loaded), else the development one,
    whose name and key go where the model config's storage settings look for them by default."""
    if "PROGRAMUSERS_AZURE_BLOB_ENDPOINT" not in os.environ:
        os.environ.update({**azurite.environment(), "PROGRAMUSERS_AZURE_BLOB_ENDPOINT": azurite.ENDPOINT})
    account_variable, key_variable = DEFAULT_STORAGE_VARIABLES["azure"]
    return AzureBlobAccount(os.environ[account_variable], os.environ[key_variable],
                            os.environ["PROGRAMUSERS_AZURE_BLOB_ENDPOINT"])


def download(url: str, folder: str) -> Path:
    """Fetches a signed link with a plain HTTP client (the secure profile's CA trusted, as the SDK's)."""
    context = ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE"))
    path = Path(folder) / url.split("?", 1)[0].rsplit("/", 1)[1]
    with urllib.request.urlopen(url, timeout=60, context=context) as answer:
        path.write_bytes(answer.read())
    return path


def load_env_file(path: Path) -> None:
    """KEY=VALUE lines (values optionally double-quoted) into this process's environment, for the
    commands the demo runs; the values are file paths and endpoints, the secrets stay in their files."""
    for line in path.read_text("utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            os.environ[key.strip()] = value.strip().strip('"')


def run(args) -> int:
    with contextlib.ExitStack() as stack:
        return _run(args, stack)


def _report_store_flags(store: str) -> list[str]:
    """The exhaust's flags for the demo's report store, made ready (its container or bucket created)."""
    if store == "local":
        return []
    if store == "azure":  # the demo's container is made here; the exhaust refuses a missing one
        azure_account().create_container(DEMO_CONTAINER)
    else:  # the stack's S3 server, with its development identity
        os.environ.update({**seaweedfs.environment(), "PROGRAMUSERS_S3_ENDPOINT": seaweedfs.ENDPOINT})
        seaweedfs.DEVELOPMENT_ACCOUNT.create_bucket(DEMO_CONTAINER)
    return ["--store", store, "--container", DEMO_CONTAINER]


def _read_through_api(api_url: str, token: str, tag: str, request_id: str) -> tuple[str, str]:
    """(where the report is, its link signed now), as the dashboard reads a finished job."""
    job = demo_api.call(f"{api_url}/request/read/{tag}?requestId={request_id}", token, CHANNEL)
    if job["result"]["status"] != "SUCCESS":
        raise SystemExit(f"demo stopped: request {request_id} ended {job['result']['status']}: "
                         f"{job['result'].get('statusMessage')}")
    link = job["result"]["downloadUrls"][0]
    return link.split("?", 1)[0], link


def _read_with_commands(request_id: str, store: str) -> tuple[str, str | None]:
    """(where the report is, a signed link to it unless it is local), from `programusers status` and `link`."""
    status = dict(line.split(": ", 1) for line in programusers("status", request_id, capture=True).splitlines()
                  if ": " in line)
    if status.get("status") != "SUCCESS":
        raise SystemExit(f"demo stopped: request {request_id} ended {status.get('status')}: "
                         f"{status.get('err_message')}")
    link = programusers("link", request_id, capture=True).strip() if store != "local" else None
    return status["download_urls"], link


def _run(args, stack: contextlib.ExitStack) -> int:
    if args.secure:
        load_env_file(SECURE_ENV)
    os.environ.setdefault("SUNBIRD_ENCRYPTION_KEY", DEMO_SALT)
    cipher = PlatformCipher.from_env()
    topic = f"{args.env}.ml.programUsers.raw"
    stages = Stages(total=6)
    store_flags = _report_store_flags(args.store)
    sample = sample_data.generate(args.users, args.seed, cipher)
    pii, open_ = sample.programs

    stages.run("init: Cassandra keyspaces and tables, PostgreSQL job_request",
               lambda: programusers("init") or "schema ready")

    stores = StoreOptions([f"--redis-db={args.redis_db}"])  # the environment's stores, the demo's cache db

    def load_sample():
        recreate_topic(stores.kafka_client(), topic)
        counts = sample_data.publish(sample, stores, topic, settings.CONSENT_KEYSPACE, progress_bar(len(sample.events)))
        return (f"{args.users} users over 2 programs: {counts['events']} events to Kafka {topic}, "
                f"{counts['consents']} consent rows to Cassandra, {counts['profiles']} user-cache hashes "
                f"(email and phone encrypted) to Redis db {args.redis_db}")
    stages.run(f"generate the sample (seed {args.seed})", load_sample)

    def ingest():
        programusers("ingest", "--runner", args.runner, "--input-topic", topic,
                     "--dead-letter-topic", f"{args.env}.ml.programUsers.failed",
                     "--max-records", str(len(sample.events)))
        with stores.cassandra_connection().session() as session:
            rows = {p["externalId"]: session.execute(
                f"SELECT COUNT(*) FROM {settings.PROGRAMS_KEYSPACE}.{schema.ENROLLMENT_TABLE} WHERE program_id = %s",
                (p["id"],)).one()[0] for p in sample.programs}
        return f"{schema.ENROLLMENT_TABLE} rows: " + ", ".join(f"{k} {v}" for k, v in rows.items())
    stages.run(f"ingest the events on {args.runner} (Kafka -> Beam -> Cassandra)", ingest)

    requests = {}  # program -> its request id, and whether it went through the API
    api = stack.enter_context(demo_api.DemoApi())
    token = demo_api.manager_token("demo-manager", CHANNEL)
    # The platform's request id is the same all day for the same tag and user: a tag of this run's own
    # makes each demo produce a fresh report.
    tag = f"{pii['id']}-{uuid.uuid4().hex[:8]}"

    def submit():
        # The PII program's request as the dashboard sends it, over HTTP; the open program's from the command line.
        body = {"params": {"msgid": "demo-1"}, "request": {
            "tag": tag, "dataset": JOB_ID, "encryptionKey": DEMO_PASSWORD,
            "datasetConfig": {"type": JOB_ID, "title": "Program users", "params": job_request.request_data(pii["id"])}}}
        answer = demo_api.call(f"{api.url}/request/submit", token, CHANNEL, body)
        requests[pii["externalId"]] = (answer["result"]["requestId"], True)
        os.environ["PROGRAMUSERS_ENCRYPTION_KEY"] = DEMO_PASSWORD  # the zip password: never on a command line
        requests[open_["externalId"]] = (programusers(
            "submit", "--program-id", open_["id"], "--requested-by", "demo-manager", "--channel", CHANNEL,
            "--filter", "updated_at", ">=", "2023-01-01", capture=True).strip(), False)
        return ", ".join(f"{program}: request {rid}" for program, (rid, _) in requests.items())
    stages.run(f"submit two report requests (PII program through the request API at {api.url}, open program "
               "with `programusers submit`)", submit)

    output = ["--output", args.output] if args.store == "local" else store_flags
    stages.run(f"exhaust on {args.runner} (job_request -> Beam join -> sealed sorted shards -> zip -> "
               f"{args.store} store)", lambda: programusers(
        "exhaust", "--runner", args.runner, *output, "--redis-db", str(args.redis_db)) or "done")

    downloads = tempfile.mkdtemp(prefix="programusers-demo-")

    def fetch(request_id: str, through_api: bool) -> tuple[str, Path, str | None]:
        """(where the report is, a local path to it, the link it came through)."""
        location, link = (_read_through_api(api.url, token, tag, request_id) if through_api
                          else _read_with_commands(request_id, args.store))
        if args.store == "local":
            return location, Path(location), None
        return location, download(link, downloads), link

    def summarise():
        lines = []
        for program, (request_id, through_api) in requests.items():
            location, path, link = fetch(request_id, through_api)
            lines.append(f"{program}: {location}")
            if link:
                lines += [f"  signed link (read-only, 30 minutes): {link}", f"  downloaded through it to {path}"]
            rows = read_report(path, DEMO_PASSWORD)
            lines += [f"  {len(rows) - 1} rows, {len(rows[0])} columns; open with: "
                      f"7z x -p{DEMO_PASSWORD} {path}   (AES-256 zip)", "  first lines:"]
            masked = [i for i, label in enumerate(rows[0]) if label in MASKED_COLUMNS]
            shown = [rows[0]] + [["[filled]" if i in masked and cell else cell for i, cell in enumerate(row)]
                                 for row in rows[1:4]]
            lines += ["    " + report_rows.csv_line(row).rstrip() for row in shown]
        return "\n      ".join(lines)
    stages.run("reports (the PII program's read through the request API)", summarise)
    print(f"demo finished in {stages.elapsed():.0f}s")
    return 0


def register(commands) -> None:
    parser = commands.add_parser("demo", help="run the whole product end to end on the local stack")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runner", default="PrismRunner")
    parser.add_argument("--env", default="demo", help="topic prefix: {env}.ml.programUsers.raw")
    parser.add_argument("--redis-db", type=int, default=0)
    parser.add_argument("--output", default="ml_reports", help="where local reports go (--store local)")
    parser.add_argument("--store", choices=("local", "azure", "s3"), default="local",
                        help=f"where reports go: this folder, or the stack's Azurite or S3 server (container or bucket "
                             f"{DEMO_CONTAINER})")
    parser.add_argument("--secure", action="store_true",
                        help=f"use the stack's secure profile (scripts/stack up --secure): the settings of "
                             f"{SECURE_ENV}")
    parser.set_defaults(handler=run)
