"""The exhaust's end-to-end scenario, shared by the tests that run it (pipelines/test_exhaust_e2e.py,
report/test_lifecycle.py, local/test_worker_pool.py).

A scenario of a few hundred users over two programs is loaded straight into Cassandra and Redis, report
requests into PostgreSQL; `programusers exhaust` runs them on DirectRunner (in process) and PrismRunner
(a subprocess). Every request's final job_request row is checked, and every report byte for byte against
a CSV built here from the scenario (not with the code under test).
"""
import csv
import io
import json
import logging
import random
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import pyzipper
import redis
from apache_beam.io.filesystems import FileSystems

from programusers import cli, schema, settings
from programusers.crypto import PlatformCipher
from programusers.io import files, postgres
from programusers.local import azurite, seaweedfs
from programusers.report.job_request import JobRequest, new_request_id, tag_for
from programusers.report.request_store import RequestStore
from programusers.report.store import BEAM_AZURE_VARIABLE

SALT = "e2e-salt"
CIPHER = PlatformCipher(SALT)
REDIS_DB = 11
KOLKATA = timedelta(hours=5, minutes=30)  # no daylight saving: a fixed offset
LABELS = ["User UUID", "User Name(On user consent)", "Mobile number(On user consent)", "Email ID(On user consent)",
          "Consent Provided", "Consent Provided Date", "Program Name", "Program ID", "State", "District", "Block",
          "Cluster", "School Id", "School Name", "Usertype", "Usersubtype", "Org Name"]
PII_LABELS = LABELS[1:6]
SORT = ["District", "Block", "Cluster", "School Id", "User UUID"]
DISTRICTS = [("d-ana", "ANANTAPUR"), ("d-chi", "CHITTOOR"), ("d-kur", "KURNOOL, WEST")]
BLOCKS = ["AGALI", "-1 BLOCK", "Rāyadurg", "agali"]
SCHOOLS = ["ZPHS AGALI", "=HYPERLINK(\"x\")", "MPPS \"Main\""]
ORGS = [("org-1", "Directorate of School Education"), ("org-2", "Samagra Shiksha, AP")]
FIRST_NAMES = ["Zorawar", "Quenby", "Ysolde", "Xanthe", "Wystan", "Ulrika", "Thaddeus", "Saoirse", "Oisín"]
LAST_NAMES = ["Brahmbhatt", "Chakravarti", "D'Souza", "Fonseca-Rao", " ", ""]


@dataclass(frozen=True)
class Program:
    id: str
    external_id: str
    name: str
    pii: bool


@dataclass
class User:
    id: str
    programs: list
    locations: dict | None
    org: tuple[str, str]
    user_type: str
    sub_type: str | None
    created: date | None
    updated: date | None
    consents: list = field(default_factory=list)  # (program id, consumer, status, last_updated_on)
    profile: dict | None = None  # plain values
    undecryptable_email: bool = False


@dataclass
class Scenario:
    a: Program  # asks for PII consent
    b: Program  # does not
    users: list[User]
    flags: list[str]
    table: str = ""  # its job_request table

    def members(self, program, keep=lambda u: True):
        return [u for u in self.users if program in u.programs and keep(u)]

    def pii_strings(self):
        for user in self.users:
            if user.profile:
                p = user.profile
                yield from (v for v in (p["email"], p.get("phone"), p["firstname"]) if v)
                if p["lastname"].strip():
                    yield f"{p['firstname']} {p['lastname']}"
                if len(p["lastname"].strip()) >= 4:
                    yield p["lastname"].strip()
                # Encrypted forms too: they are as personal as the plaintext (ECB is deterministic).
                email_cipher = PlatformCipher("another-salt") if user.undecryptable_email else CIPHER
                yield email_cipher.encrypt(p["email"])
                if p.get("phone"):
                    yield CIPHER.encrypt(p["phone"])


def build_scenario(unique: str) -> Scenario:
    rng = random.Random(20240229)
    a = Program(f"pa-{unique}", "PGM-A-2023", 'Literacy Mission, "Phase 1"', True)
    b = Program(f"pb-{unique}", "-PGM-B", "Leadership", False)
    other = f"po-{unique}"
    users = []
    for i in range(240):
        district_id, district = DISTRICTS[rng.randrange(3)]
        locations = None if i % 13 == 0 else {
            "state_name": "Andhra Pradesh", "state_id": "s-ap", "district_name": district, "district_id": district_id,
            "block_name": rng.choice(BLOCKS), "cluster_name": f"CLUSTER {rng.randint(1, 3)}",
            "school_code": str(rng.choice([28226200816, 28226200817, 2822620])), "school_name": rng.choice(SCHOOLS)}
        day = lambda: date(2022, 6, 1) + timedelta(days=rng.randrange(730))  # noqa: E731
        user = User(id=f"{unique}-{i:03d}", programs=[[a], [a], [b], [a, b]][i % 4], locations=locations,
                    org=ORGS[i % 2], user_type=rng.choice(["teacher", "administrator,teacher", "administrator"]),
                    sub_type=rng.choice([None, "HM", "HM,CRP"]), created=day(), updated=None if i % 17 == 0 else day())
        when = datetime(2023, rng.randint(1, 12), rng.randint(1, 28), rng.randrange(24), rng.randrange(60))
        kind = i % 7
        if kind < 3:
            user.consents.append((a.id, "org-a", ["ACTIVE", "active", "Active"][kind], when))
        elif kind == 3:
            user.consents.append((a.id, "org-a", "REVOKED", when))
        elif kind == 5:
            user.consents.append((other, "org-a", "ACTIVE", when))
        elif kind == 6:  # two consumers: the later decision counts
            later = ["ACTIVE", "REVOKED"][i % 2]
            user.consents += [(a.id, "org-a", "REVOKED" if later == "ACTIVE" else "ACTIVE", when),
                              (a.id, "org-b", later, when + timedelta(days=3))]
        if b in user.programs:
            user.consents.append((b.id, "org-a", "ACTIVE", when))  # never read: b asks for no consent
        if i % 11:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            user.profile = {"firstname": first, "lastname": last, "email": f"{first.lower()}.{i}@pii.example",
                            "phone": None if i % 9 == 0 else f"9{rng.randrange(10**8, 10**9)}"}
        users.append(user)
    # One consented user of district d-ana whose cached email was encrypted under another salt.
    next(u for u in users if a in u.programs and u.profile and u.locations and u.locations["district_id"] == "d-ana"
         and active_consent(u, a)).undecryptable_email = True
    return Scenario(a, b, users, flags=[])


def latest_consent(user, program):
    rows = [c for c in user.consents if c[0] == program.id]
    return max(rows, key=lambda c: c[3]) if rows else None


def active_consent(user, program):
    consent = latest_consent(user, program)
    return consent is not None and consent[2].lower() == "active"


def guard(value):
    return "'" + value if value and value[0] in "=+-@\t\r" else value


def expected_cells(user, program):
    loc = user.locations or {}
    cells = {"User UUID": user.id, "Program Name": f"'{program.name}'", "Program ID": guard(program.external_id),
             "State": loc.get("state_name", ""), "District": loc.get("district_name", ""),
             "Block": guard(loc.get("block_name", "")), "Cluster": loc.get("cluster_name", ""),
             "School Id": loc.get("school_code", ""), "School Name": guard(loc.get("school_name", "")),
             "Usertype": user.user_type, "Usersubtype": user.sub_type or "", "Org Name": user.org[1]}
    if program.pii:
        consent, name, phone, email = latest_consent(user, program), "", "", ""
        if active_consent(user, program) and user.profile:
            p = user.profile
            full = " ".join(n.strip() for n in (p["firstname"], p["lastname"]) if n.strip())
            name, phone = f"'{full}'", p["phone"] or ""
            email = "" if user.undecryptable_email else p["email"]
        cells.update({"User Name(On user consent)": name, "Mobile number(On user consent)": phone,
                      "Email ID(On user consent)": email,
                      "Consent Provided": "Yes" if active_consent(user, program) else "No",
                      "Consent Provided Date": (consent[3] + KOLKATA).strftime("%d/%m/%Y") if consent else ""})
    return cells


def expected_csv(program, users) -> bytes:
    labels = LABELS if program.pii else [label for label in LABELS if label not in PII_LABELS]
    rows = sorted((expected_cells(u, program) for u in users), key=lambda c: [c[label] for label in SORT])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(labels)
    writer.writerows([row[label] for label in labels] for row in rows)
    return out.getvalue().encode("utf-8")


def load(scenario, session, keyspaces):
    enroll = session.prepare(
        f"INSERT INTO {keyspaces['programs_keyspace']}.program_enrollment (program_id, program_externalId, "
        "program_name, pii_consent_required, user_id, user_locations, organisation_id, organisation_name, "
        "user_type, user_sub_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    consent = session.prepare(
        f"INSERT INTO {keyspaces['consent_keyspace']}.user_consent (user_id, consumer_id, object_id, object_type, "
        "status, last_updated_on) VALUES (?, ?, ?, 'Program', ?, ?)")
    for u in scenario.users:
        for p in u.programs:
            session.execute(enroll, (p.id, p.external_id, p.name, p.pii, u.id, u.locations, u.org[0], u.org[1],
                                     u.user_type, u.sub_type, u.created, u.updated))
        for object_id, consumer, status, when in u.consents:
            session.execute(consent, (u.id, consumer, object_id, status, when))
    load_cache(scenario)


def load_cache(scenario):
    """The scenario's user cache, in a Redis database of its own."""
    cache = redis.Redis(host=settings.REDIS_HOST, port=settings.REDIS_PORT, db=REDIS_DB)
    cache.flushdb()
    for u in scenario.users:
        if u.profile:
            p, email_cipher = u.profile, PlatformCipher("another-salt") if u.undecryptable_email else CIPHER
            cache.hset(f"user:{u.id}", mapping={
                "userid": u.id, "firstname": p["firstname"], "lastname": p["lastname"],
                "email": email_cipher.encrypt(p["email"]), "usertype": "teacher",
                **({"phone": CIPHER.encrypt(p["phone"])} if p["phone"] else {})})


@pytest.fixture(scope="module")
def scenario(test_schema, cassandra_session, pg_dsn):
    unique = uuid.uuid4().hex[:8]
    built = build_scenario(unique)
    load(built, cassandra_session, test_schema)
    # A job_request table per module: an exhaust produces every pending request, so that no module's run
    # meets a request another module left pending.
    built.table, connection = f"job_request_{unique}", postgres.connect(pg_dsn)
    schema.init_postgres(connection, built.table)
    built.flags = ["--job-request-table", built.table,
                   "--cassandra-hosts", settings.CASSANDRA_HOSTS,
                   "--programs-keyspace", test_schema["programs_keyspace"],
                   "--consent-keyspace", test_schema["consent_keyspace"], "--redis-host", settings.REDIS_HOST,
                   "--redis-port", str(settings.REDIS_PORT), "--redis-db", str(REDIS_DB),
                   # Small pages (each a lookup batch) and shards, so paging and the shard merge are exercised.
                   "--cassandra-fetch-size", "16", "--rows-per-shard", "20"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUNBIRD_ENCRYPTION_KEY", SALT)
        yield built
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {built.table}")
    connection.close()


@pytest.fixture
def table(pg_dsn, unique):
    """A job_request table of the test's own, so only its own requests are pending."""
    name = f"ops_job_request_{unique}"
    connection = postgres.connect(pg_dsn)
    schema.init_postgres(connection, name)
    yield name
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
    connection.close()


def flags(scenario, table):
    """The scenario's exhaust flags on this test's job_request table."""
    given = list(scenario.flags)
    given[given.index("--job-request-table") + 1] = table
    return given


def submit_district(pg_dsn, table, scenario, key="k-district", by="manager-1") -> str:
    """A request for program a's district d-ana (distinct `by`: not a duplicate of another)."""
    request = JobRequest(tag=tag_for(scenario.a.id, "ch-1"), request_id=new_request_id(),
                         request_data=enrollment(f("user_locations['district_id']", "=", "d-ana"), program=scenario.a),
                         requested_by=by, requested_channel="ch-1", encryption_key=key)
    RequestStore(pg_dsn, table).insert(request)
    return request.request_id


@pytest.fixture
def azure_container(stack, monkeypatch):
    """A container of the test's own on the stack's Azurite, with the development account's name and key in
    the variables the model config's storage settings name by default."""
    name = f"reports-{uuid.uuid4().hex[:12]}"
    azurite.DEVELOPMENT_ACCOUNT.create_container(name)
    for variable, value in azurite.environment().items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv(BEAM_AZURE_VARIABLE, "")  # the exhaust exports the account there: unset again after
    yield name
    azurite.DEVELOPMENT_ACCOUNT.client().delete_container(name)


@pytest.fixture
def staged(monkeypatch):
    """Every file staged for a request, as (path, bytes), read just before its staging folder is removed."""
    found_files, remove_dir = [], files.remove_dir

    def keep_and_remove(path):
        for found in FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list:
            with FileSystems.open(found.path) as staged_file:
                found_files.append((found.path, staged_file.read()))
        remove_dir(path)
    monkeypatch.setattr(files, "remove_dir", keep_and_remove)
    return found_files


def clear_text_pii(staged_files, scenario) -> list[str]:
    """The staged files that hold any of the scenario's names, emails or phones."""
    pii = [value.encode() for value in scenario.pii_strings()]
    return [path for path, data in staged_files if any(value in data for value in pii)]


def blob_names(container) -> list[str]:
    return sorted(b.name for b in azurite.DEVELOPMENT_ACCOUNT.client().get_container_client(container).list_blobs())


BEAM_S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def s3_bucket(stack, monkeypatch):
    """A bucket of the test's own on the stack's S3 server, with the development identity in the variables
    the model config's storage settings name by default for s3."""
    name = f"reports-{uuid.uuid4().hex[:12]}"
    seaweedfs.DEVELOPMENT_ACCOUNT.create_bucket(name)
    for variable, value in seaweedfs.environment().items():
        monkeypatch.setenv(variable, value)
    for variable in BEAM_S3_VARIABLES:  # the exhaust exports the identity there: unset again after
        monkeypatch.setenv(variable, "")
    yield name
    client = seaweedfs.DEVELOPMENT_ACCOUNT.client()
    for found in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=found["Key"])
    client.delete_bucket(Bucket=name)


def object_keys(bucket) -> list[str]:
    return sorted(found["Key"] for found in seaweedfs.DEVELOPMENT_ACCOUNT.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def enrollment(*table_filters, program):
    return {"filters": [{"table_name": "program_enrollment", "table_filters": [
        {"name": "program_id", "operator": "=", "value": program.id}, *table_filters]},
        {"table_name": "user_consent", "table_filters": [{"name": "object_id", "operator": "=", "value": program.id}]}]}


def f(name, op, value):
    return {"name": name, "operator": op, "value": value}


def district(*ids):
    return (lambda u: u.locations is not None and u.locations["district_id"] in ids)


def requests(s: Scenario):
    """name -> (program, request_data, encryption_key, channel, then the report's rows or the err_message)."""
    a, b = s.a, s.b
    in_2023 = lambda u: u.updated is not None and date(2023, 1, 1) <= u.updated <= date(2023, 12, 31)  # noqa: E731
    dup = enrollment(f("user_locations['district_id']", "in", ["d-chi", "d-kur"]), program=a)
    return {
        "district": (a, enrollment(f("user_locations['district_id']", "=", "d-ana"), program=a), "k-district", "ch-1",
                     s.members(a, district("d-ana"))),
        "dates": (a, enrollment(f("updated_at", ">=", "2023-01-01"), f("updated_at", "<=", "2023-12-31"), program=a),
                  "k-dates", None, s.members(a, in_2023)),
        "organisation": (b, enrollment(f("organisation_id", "=", "org-2"), program=b), "k-org", "ch-1",
                         s.members(b, lambda u: u.org[0] == "org-2")),
        "duplicate_1": (a, dup, "k-dup", "ch-1", s.members(a, district("d-chi", "d-kur"))),
        "duplicate_2": (a, dup, "k-dup", "ch-2", s.members(a, district("d-chi", "d-kur"))),
        "no_match": (a, enrollment(f("user_locations['district_id']", "=", "d-none"), program=a), "k", None,
                     "No Data Found"),
        "invalid_filter": (a, enrollment(f("email", "=", "x@y"), program=a), "k", None,
                           "filter program_enrollment.'email' is not allowed"),
        "missing_key": (a, enrollment(program=a), None, None, "encryption_key is required for this report"),
        "no_program": (a, {"filters": [{"table_name": "program_enrollment", "table_filters": [
            f("organisation_id", "=", "org-1")]}]}, "k", None,
            "exactly one program_enrollment.program_id '=' filter is required, found 0"),
        "no_request_data": (a, None, "k", None, "request_data is missing"),
    }


def submit(dsn, table, case) -> str:
    """Submits the request of `case` (program, request_data, encryption_key, channel, ...: see requests())
    to `table` of the PostgreSQL at `dsn`."""
    program, data, key, channel = case[:4]
    request = JobRequest(tag=tag_for(program.id, channel), request_id=new_request_id(), request_data=data,
                         requested_by="manager-1", requested_channel=channel, encryption_key=key)
    RequestStore(dsn, table).insert(request)
    return request.request_id


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def exhaust_in_process(scenario, *args) -> tuple[int, list[str]]:
    handler, root = Lines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        code = cli.main(["exhaust", "--runner", "DirectRunner", *scenario.flags, *args])
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return code, handler.lines


def status_rows(pg_dsn, table, request_id) -> dict:
    (row,) = RequestStore(pg_dsn, table).status(request_id)
    return row


def unzipped(path, password) -> bytes:
    with pyzipper.AESZipFile(path) as archive:
        (member,) = archive.infolist()
        assert member.filename == Path(path).with_suffix(".csv").name
        return archive.read(member, pwd=password.encode())


@dataclass
class Run:
    code: int
    ids: dict
    logs: list
    output: Path
    staging: Path


def logged_counters(lines, request_id) -> dict:
    (line,) = [line for line in lines if f"request {request_id}: {{" in line]
    return json.loads(line[line.index("{"):])


def expected_counters(scenario) -> dict:
    a = scenario.a
    users = scenario.members(a, district("d-ana"))
    consented = [u for u in users if active_consent(u, a)]
    return {"enrollments_read": len(scenario.members(a)), "report_rows_built": len(users),
            "report_rows_written": len(users),
            "consents_found": sum(1 for u in users if latest_consent(u, a)),
            "profiles_found": sum(1 for u in consented if u.profile),
            "profile_missing": sum(1 for u in consented if not u.profile), "email_undecryptable": 1}


def d_ana_report(scenario) -> bytes:
    """The expected report of submit_district's request."""
    return expected_csv(scenario.a, scenario.members(scenario.a, district("d-ana")))


def link(table, request_id, *args) -> str:
    """What `programusers link` prints for a request of `table` (the stack's Azurite as the Azure endpoint)."""
    done = subprocess.run([sys.executable, "-m", "programusers", "link", request_id, "--job-request-table", table,
                           "--azure-blob-endpoint", azurite.ENDPOINT, *args], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def refused(url, method="GET") -> int:
    """The HTTP status with which a store refuses a (signed) URL."""
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x" if method == "PUT" else None, method=method,
                                                      headers={"x-ms-blob-type": "BlockBlob"}), timeout=30)
    return error.value.code


def d_ana(scenario) -> bytes:
    return expected_csv(scenario.a, scenario.members(scenario.a, district("d-ana")))
