"""`programusers generate`: a realistic, deterministic sample for the demo, benchmarks and tests.

Two programs (one asking for PII consent, one not), users joining one or both with the design note's
event shape, consent rows (active, revoked, for other programs, or none) and the platform's user
cache with email and phone encrypted (SPEC §4).
"""
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from programusers import schema, settings
from programusers.crypto import PlatformCipher
from programusers.io.cassandra import identifier
from programusers.io.kafka import KafkaClientConfig
from programusers.options import StoreOptions, from_args, keyspace_flags, store_flags

FIRST_NAMES = ["Asha", "Ravi", "Lakshmi", "Suresh", "Ananya", "Mohammed", "Priya", "Venkat", "Fatima", "Arjun",
               "Kavya", "Srinivas", "Deepa", "Rāmu", "Zoë", "Harpreet"]
LAST_NAMES = ["Reddy", "Naidu", "Sharma", "Khan", "Iyer", "Rao", "Das", "Singh", "Pillai", "Gowda", "D'Souza", ""]
STATES = {
    "Andhra Pradesh": ["ANANTAPUR", "CHITTOOR", "KURNOOL", "GUNTUR"],
    "Karnataka": ["BELAGAVI", "MYSURU", "TUMAKURU"],
}
USER_TYPES = [("teacher", None), ("administrator", "hm"), ("administrator", "crp"), ("administrator", "deo"),
              ("administrator", "beo"), ("parent", None)]
ORGS = [("0126796199493140480", "Staging Custodian Organization"), ("0137541424673095687", "AP State Org"),
        ("0137541424673095688", "Karnataka State Org")]
EPOCH = datetime(2023, 1, 1, tzinfo=UTC)


@dataclass
class Sample:
    programs: list[dict]
    events: list[dict] = field(default_factory=list)
    consents: list[dict] = field(default_factory=list)
    profiles: dict[str, dict] = field(default_factory=dict)


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"  # Mongo ObjectId-like


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _locations(rng: random.Random) -> list[dict]:
    state = rng.choice(sorted(STATES))
    district = rng.choice(STATES[state])
    block, cluster = f"{district[:4]} BLOCK {rng.randint(1, 4)}", f"CLUSTER {rng.randint(1, 9)}"
    school_code = f"28{rng.randint(10**8, 10**9 - 1)}"
    entries = [("state", state, "28"), ("district", district, str(rng.randint(2800, 2899))),
               ("block", block, str(rng.randint(280000, 289999))),
               ("cluster", cluster, str(rng.randint(10**9, 10**10))),
               ("school", f"ZPHS {district.title()} {school_code[-3:]}", school_code)]
    return [{"type": kind, "name": name, "code": code, "id": random_uuid(rng)} for kind, name, code in entries]


def enrollment_event(rng: random.Random, program: dict, user_id: str, org: tuple[str, str]) -> dict:
    """A user's enrollment event for `program` (an ORGS entry as `org`), in the design note's shape."""
    created = EPOCH + timedelta(minutes=rng.randint(0, 2 * 365 * 24 * 60))
    updated = created + timedelta(minutes=rng.randint(0, 30 * 24 * 60))
    types = rng.sample(USER_TYPES, rng.choice([1, 1, 2]))
    profile = {"profileUserTypes": [{"type": t, **({"subType": s} if s else {})} for t, s in types],
               "rootOrg": {"id": org[0], "orgName": org[1]}}
    if rng.random() > 0.03:  # a few users have no location in their profile
        profile["userLocations"] = _locations(rng)
    return {"_id": hex_id(rng), "deleted": False, "programId": program["id"], "programName": program["name"],
            "programExternalId": program["externalId"], "requestForPIIConsent": program["pii"], "userId": user_id,
            "userRoleInformation": {"role": "HM"}, "appInformation": {"appName": "Diksha", "appVersion": "5.2"},
            "userProfile": profile, "noOfResourcesStarted": rng.randint(0, 10),
            "createdAt": _iso(created), "updatedAt": _iso(updated), "__v": 0}


def consent_row(rng: random.Random, user_id: str, program_id: str, org_id: str, status: str) -> dict:
    """A user_consent row: every column, keyed by name."""
    updated = EPOCH + timedelta(minutes=rng.randint(0, 2 * 365 * 24 * 60))
    return {"id": f"usr-consent:{user_id}:{org_id}:{program_id}", "user_id": user_id, "consumer_id": org_id,
            "consumer_type": "ORGANISATION", "object_id": program_id, "object_type": "Program", "status": status,
            "categories": [], "consent_data": None, "created_on": updated, "last_updated_on": updated, "expiry": None}


def user_profile(rng: random.Random, user_id: str, cipher: PlatformCipher) -> dict:
    """A user's hash in the user cache, email and phone encrypted with `cipher`."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{first.lower()}.{user_id[:8]}@example.org"
    hash_ = {"userid": user_id, "firstname": first, "lastname": last, "email": cipher.encrypt(email),
             "rootorgid": ORGS[0][0], "usertype": "teacher"}
    if rng.random() < 0.9:
        hash_["phone"] = cipher.encrypt(f"9{rng.randint(10**8, 10**9 - 1)}")
    return hash_


def generate(users: int, seed: int, cipher: PlatformCipher) -> Sample:
    """`users` users over two programs; the same seed gives the same sample."""
    rng = random.Random(seed)
    pii = {"id": hex_id(rng), "externalId": "PGM-PII-2023", "name": "Foundational Literacy Mission", "pii": True}
    open_ = {"id": hex_id(rng), "externalId": "PGM-OPEN-2023", "name": "School Leadership, 2023", "pii": False}
    other_program = hex_id(rng)
    sample = Sample(programs=[pii, open_])
    for _ in range(users):
        user_id, org = random_uuid(rng), rng.choice(ORGS)
        roll = rng.random()
        joined = [pii] if roll < 0.5 else [open_] if roll < 0.8 else [pii, open_]
        sample.events += [enrollment_event(rng, program, user_id, org) for program in joined]
        consent_roll = rng.random()
        if consent_roll < 0.55:
            sample.consents.append(consent_row(rng, user_id, pii["id"], org[0], rng.choice(["ACTIVE", "active"])))
        elif consent_roll < 0.70:
            sample.consents.append(consent_row(rng, user_id, pii["id"], org[0], "REVOKED"))
        elif consent_roll < 0.80:
            sample.consents.append(consent_row(rng, user_id, other_program, org[0], "ACTIVE"))
        if rng.random() < 0.97:  # a few users are missing from the user cache
            sample.profiles[user_id] = user_profile(rng, user_id, cipher)
    return sample


def produce_events(events: list[dict], kafka: KafkaClientConfig, topic: str, progress=None) -> int:
    from confluent_kafka import Producer

    producer = Producer(kafka.python(**{"linger.ms": 20, "acks": "all"}))
    for n, event in enumerate(events, 1):
        producer.produce(topic, key=event["userId"].encode(), value=json.dumps(event).encode())
        producer.poll(0)
        if progress:
            progress(n)
    if producer.flush(60):
        raise RuntimeError(f"not every event reached Kafka topic {topic}")
    return len(events)


def load_consents(session, keyspace: str, consents: list[dict]) -> int:
    from cassandra.concurrent import execute_concurrent_with_args

    columns = ["id", "user_id", "consumer_id", "consumer_type", "object_id", "object_type", "status", "categories",
               "consent_data", "created_on", "last_updated_on", "expiry"]
    table = f"{identifier(keyspace, 'keyspace')}.{schema.CONSENT_TABLE}"
    insert = session.prepare(f"INSERT INTO {table} ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * len(columns))})")
    execute_concurrent_with_args(session, insert, [[c[k] for k in columns] for c in consents],
                                 concurrency=64, raise_on_first_error=True)
    return len(consents)


def load_profiles(client, profiles: dict[str, dict]) -> int:
    pipe = client.pipeline(transaction=False)
    for n, (user_id, hash_) in enumerate(profiles.items(), 1):
        pipe.hset(f"user:{user_id}", mapping=hash_)
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return len(profiles)


def publish(sample: Sample, stores: StoreOptions, topic: str, consent_keyspace: str, progress=None) -> dict:
    """Loads a sample where the platform keeps it: events to Kafka, consent rows to Cassandra, the user
    cache to Redis. Returns the counts."""
    with stores.cassandra_connection().session() as session:
        consents = load_consents(session, consent_keyspace, sample.consents)
    with stores.redis_connection().client() as cache:
        profiles = load_profiles(cache, sample.profiles)
    return {"consents": consents, "profiles": profiles,
            "events": produce_events(sample.events, stores.kafka_client(), topic, progress), "topic": topic}


def _generate(args) -> int:
    sample = generate(args.users, args.seed, PlatformCipher.from_env())
    counts = publish(sample, from_args(args), args.topic, args.consent_keyspace)
    print(json.dumps({"programs": sample.programs, **counts}))
    return 0


def register(commands) -> None:
    parser = commands.add_parser("generate", help="generate a deterministic sample: events to Kafka, consent "
                                                  "rows to Cassandra, the user cache to Redis")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--topic", default=f"{settings.ENV_NAME}.ml.programUsers.raw")
    keyspace_flags(parser, programs=False)
    store_flags(parser)  # --redis-db: where the user cache goes (default 0 here)
    parser.set_defaults(handler=_generate)
