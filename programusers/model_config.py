"""The exhaust job's model config: the design note's JSON, accepted as is and validated once.

Optional ``modelParams`` keys of ours: ``encryptionKeyRequired`` (bool, default true) and
``timeZone`` (IANA name, default ``Asia/Kolkata``). Where reports are stored, as the platform's model
configs spell it: ``store`` (local, azure, s3, gcloud; default local), ``container`` (the container or
bucket; required unless local), ``storageKeyConfig`` / ``storageSecretConfig`` (the names of the
environment variables holding the account and its key) and ``key`` (the reports' folder or prefix).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from programusers.schema import ENROLLMENT_TABLE

# The five columns that exist only when the program asks for PII consent.
PII_FIELDS = ("username", "phone", "email", "consentflag", "consentprovideddate")
DEFAULT_TIME_ZONE = "Asia/Kolkata"
STORES = ("local", "azure", "s3", "gcloud")
# The platform's defaults for the variables that hold a store's account and key.
DEFAULT_STORAGE_VARIABLES = {"azure": ("azure_storage_key", "azure_storage_secret"),
                             "s3": ("aws_storage_key", "aws_storage_secret")}


class ModelConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ReportConfig:
    job_id: str
    keyspace: str
    label_mapping: dict[str, str]  # source field -> CSV label
    columns: tuple[str, ...]  # CSV labels in file order
    fields: tuple[str, ...]  # source field of each column, same order
    sort_labels: tuple[str, ...]
    quote_labels: tuple[str, ...]
    location_fields: tuple[str, ...]  # keys of the user_locations map
    redis_host: str
    redis_port: int
    redis_db: int
    cassandra_host: str
    output_path: str
    requires_encryption_key: bool = True
    time_zone: str = DEFAULT_TIME_ZONE
    store: str = "local"
    container: str | None = None
    storage_key_config: str | None = None  # the environment variable holding the account (None: the default)
    storage_secret_config: str | None = None  # the one holding its key
    authorized_roles: tuple[str, ...] = ("PROGRAM_MANAGER",)  # the roles that may submit a request (the API)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


_REQUIRED = object()
_KINDS = {
    "text": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "texts": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "mapping": ("an object of strings", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    # The design note stores the Redis index as the string "0" and the port as a number.
    "count": ("a non-negative integer", lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
              or (isinstance(v, str) and v.strip().isdigit())),
}


def _get(obj: dict, where: str, key: str, kind: str, default=_REQUIRED):
    path = f"{where}.{key}" if where else key
    if key not in obj:
        if default is _REQUIRED:
            raise ModelConfigError(f"{path} is required")
        return default
    description, valid = _KINDS[kind]
    value = obj[key]
    if not valid(value):
        raise ModelConfigError(f"{path} must be {description}, got {type(value).__name__}")
    return int(value) if kind == "count" else value


def _unique(labels: list[str], where: str) -> tuple[str, ...]:
    seen = set()
    for label in labels:
        if label in seen:
            raise ModelConfigError(f"{where} lists {label!r} twice")
        seen.add(label)
    return tuple(labels)


def _subset(labels: tuple[str, ...], columns: tuple[str, ...], where: str) -> None:
    for label in labels:
        if label not in columns:
            raise ModelConfigError(f"{where} label {label!r} is not in modelParams.order_of_csv_column")


def _output_path(doc: dict, params: dict) -> str:
    if params.get("key"):
        return _get(params, "modelParams", "key", "text")
    outputs = _get(doc, "", "output", "list", [])
    if outputs and isinstance(outputs[0], dict) and isinstance(outputs[0].get("params"), dict):
        return _get(outputs[0]["params"], "output[0].params", "file", "text")
    raise ModelConfigError("modelParams.key or output[0].params.file is required")


def _enrollment_table(params: dict) -> dict:
    for i, table in enumerate(_get(params, "modelParams", "table", "list")):
        if not isinstance(table, dict):
            raise ModelConfigError(f"modelParams.table[{i}] must be an object, got {type(table).__name__}")
        if table.get("name") == ENROLLMENT_TABLE:
            return table
    raise ModelConfigError(f"modelParams.table has no {ENROLLMENT_TABLE!r} entry")


def _parse(doc: Mapping) -> ReportConfig:
    if not isinstance(doc, Mapping):
        raise ModelConfigError(f"model config must be a JSON object, got {type(doc).__name__}")
    params = _get(dict(doc), "", "modelParams", "object")
    where = "modelParams"
    table = _enrollment_table(params)
    table_where = f"{where}.table[{ENROLLMENT_TABLE}]"
    location_fields = tuple(_get(table, table_where, "user_locations_columns", "texts"))
    enrollment_columns = set(_get(table, table_where, "columns", "texts"))

    label_mapping = _get(params, where, "label_mapping", "mapping")
    field_of = {}
    for field, label in label_mapping.items():
        if label in field_of:
            raise ModelConfigError(f"{where}.label_mapping maps both {field_of[label]!r} and {field!r} to {label!r}")
        field_of[label] = field
    columns = _unique(_get(params, where, "order_of_csv_column", "texts"), f"{where}.order_of_csv_column")
    for label in columns:
        if label not in field_of:
            raise ModelConfigError(f"{where}.order_of_csv_column label {label!r} has no key in label_mapping")
        field = field_of[label]
        if field not in PII_FIELDS and field not in location_fields and field not in enrollment_columns:
            raise ModelConfigError(
                f"{where}.label_mapping field {field!r} is neither a PII field, a user_locations_columns key "
                f"nor a {ENROLLMENT_TABLE} column")
    sort_labels = _unique(_get(params, where, "sort", "texts", []), f"{where}.sort")
    _subset(sort_labels, columns, f"{where}.sort")
    quote_labels = _unique(_get(params, where, "quote_column", "texts", []), f"{where}.quote_column")
    _subset(quote_labels, columns, f"{where}.quote_column")

    time_zone = _get(params, where, "timeZone", "text", DEFAULT_TIME_ZONE)
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ModelConfigError(f"{where}.timeZone {time_zone!r} is not a known time zone") from None

    store = _get(params, where, "store", "text", "local")
    if store not in STORES:
        raise ModelConfigError(f"{where}.store must be one of {', '.join(STORES)}, got {store!r}")
    container = _get(params, where, "container", "text", None)
    if store != "local" and container is None:
        raise ModelConfigError(f"{where}.container is required for the {store} store")

    return ReportConfig(
        store=store,
        container=container,
        authorized_roles=tuple(_get(params, where, "authorizedRoles", "texts", ["PROGRAM_MANAGER"])),
        storage_key_config=_get(params, where, "storageKeyConfig", "text", None),
        storage_secret_config=_get(params, where, "storageSecretConfig", "text", None),
        job_id=_get(params, where, "id", "text"),
        keyspace=_get(params, where, "keyspace_name", "text"),
        label_mapping=dict(label_mapping),
        columns=columns,
        fields=tuple(field_of[label] for label in columns),
        sort_labels=sort_labels,
        quote_labels=quote_labels,
        location_fields=location_fields,
        redis_host=_get(params, where, "sparkRedisConnectionHost", "text"),
        redis_port=_get(params, where, "sparkUserDbRedisPort", "count"),
        redis_db=_get(params, where, "sparkUserDbRedisIndex", "count"),
        cassandra_host=_get(params, where, "sparkCassandraConnectionHost", "text"),
        output_path=_output_path(dict(doc), params),
        requires_encryption_key=_get(params, where, "encryptionKeyRequired", "bool", True),
        time_zone=time_zone,
    )


def load_model_config(source: str | os.PathLike | Mapping) -> ReportConfig:
    """Load and validate a model config from a JSON file path or an already parsed dict."""
    if isinstance(source, Mapping):
        return _parse(source)
    try:
        doc = json.loads(Path(source).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelConfigError(f"cannot read model config {source}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"model config {source} is not valid JSON: {exc}") from None
    return _parse(doc)


def default_model_config() -> ReportConfig:
    """The packaged config (programusers/config/model-config.json)."""
    text = files("programusers").joinpath("config/model-config.json").read_text(encoding="utf-8")
    return load_model_config(json.loads(text))
