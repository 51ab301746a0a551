import copy
import json
import pickle
from pathlib import Path

import pytest

from programusers.model_config import (
    PII_FIELDS,
    ModelConfigError,
    ReportConfig,
    default_model_config,
    load_model_config,
)

PACKAGED = Path(__file__).resolve().parents[1] / "programusers" / "config" / "model-config.json"
RAW = json.loads(PACKAGED.read_text(encoding="utf-8"))
PII_LABELS = [
    "User Name(On user consent)",
    "Mobile number(On user consent)",
    "Email ID(On user consent)",
    "Consent Provided",
    "Consent Provided Date",
]


def raw():
    return copy.deepcopy(RAW)


def test_packaged_config():
    config = default_model_config()
    assert isinstance(config, ReportConfig)
    assert config.job_id == "program-user-exhaust"
    assert config.keyspace == "sunbird_programs"
    assert config.columns == tuple(RAW["modelParams"]["order_of_csv_column"])
    assert config.fields == (
        "user_id", "username", "phone", "email", "consentflag", "consentprovideddate",
        "program_name", "program_externalId", "state_name", "district_name", "block_name",
        "cluster_name", "school_code", "school_name", "user_type", "user_sub_type", "organisation_name",
    )
    assert config.label_mapping["program_externalId"] == "Program ID"
    assert config.sort_labels == ("District", "Block", "Cluster", "School Id", "User UUID")
    assert config.quote_labels == ("User Name(On user consent)", "Program Name")
    assert config.location_fields == (
        "state_name", "district_name", "block_name", "cluster_name", "school_code", "school_name")
    assert (config.redis_host, config.redis_port, config.redis_db) == ("localhost", 6381, 0)
    assert config.cassandra_host == "localhost"
    assert config.output_path == "ml_reports/"
    assert config.requires_encryption_key is True
    assert config.time_zone == "Asia/Kolkata" and str(config.tz) == "Asia/Kolkata"
    assert PII_FIELDS == ("username", "phone", "email", "consentflag", "consentprovideddate")


def test_load_from_path_equals_load_from_dict(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(RAW), encoding="utf-8")
    assert load_model_config(path) == load_model_config(str(path)) == load_model_config(RAW)


def test_config_survives_pickling():
    config = default_model_config()
    assert pickle.loads(pickle.dumps(config)) == config


def test_optional_keys():
    doc = raw()
    doc["modelParams"].update(encryptionKeyRequired=False, timeZone="UTC", sparkUserDbRedisIndex=12, key="")
    doc["output"][0]["params"]["file"] = "/data/reports"
    del doc["modelParams"]["sort"], doc["modelParams"]["quote_column"]
    config = load_model_config(doc)
    assert config.requires_encryption_key is False
    assert config.time_zone == "UTC"
    assert config.redis_db == 12
    assert config.output_path == "/data/reports"
    assert config.sort_labels == () and config.quote_labels == ()


def _drop(doc, *path):
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]


def _set(doc, value, *path):
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: _drop(d, "modelParams"), "modelParams is required"),
        (lambda d: _drop(d, "modelParams", "id"), "modelParams.id is required"),
        (lambda d: _drop(d, "modelParams", "keyspace_name"), "modelParams.keyspace_name is required"),
        (lambda d: _drop(d, "modelParams", "label_mapping"), "modelParams.label_mapping is required"),
        (lambda d: _drop(d, "modelParams", "order_of_csv_column"), "modelParams.order_of_csv_column is required"),
        (lambda d: _drop(d, "modelParams", "sparkRedisConnectionHost"), "sparkRedisConnectionHost is required"),
        (lambda d: _drop(d, "modelParams", "sparkUserDbRedisPort"), "sparkUserDbRedisPort is required"),
        (lambda d: _drop(d, "modelParams", "sparkUserDbRedisIndex"), "sparkUserDbRedisIndex is required"),
        (lambda d: _drop(d, "modelParams", "sparkCassandraConnectionHost"), "sparkCassandraConnectionHost is required"),
        (lambda d: _drop(d, "modelParams", "table"), "modelParams.table is required"),
        (lambda d: _drop(d, "modelParams", "table", 0), "has no 'program_enrollment' entry"),
        (lambda d: _drop(d, "modelParams", "table", 0, "user_locations_columns"),
         "modelParams.table[program_enrollment].user_locations_columns is required"),
        (lambda d: (_drop(d, "modelParams", "key"), _drop(d, "output")),
         "modelParams.key or output[0].params.file is required"),
        (lambda d: _set(d, [], "modelParams"), "modelParams must be an object, got list"),
        (lambda d: _set(d, 7, "modelParams", "id"), "modelParams.id must be a non-empty string, got int"),
        (lambda d: _set(d, " ", "modelParams", "keyspace_name"), "modelParams.keyspace_name must be a non-empty"),
        (lambda d: _set(d, "six", "modelParams", "sparkUserDbRedisPort"),
         "modelParams.sparkUserDbRedisPort must be a non-negative integer, got str"),
        (lambda d: _set(d, True, "modelParams", "sparkUserDbRedisIndex"),
         "modelParams.sparkUserDbRedisIndex must be a non-negative integer, got bool"),
        (lambda d: _set(d, -1, "modelParams", "sparkUserDbRedisPort"), "must be a non-negative integer, got int"),
        (lambda d: _set(d, "User UUID", "modelParams", "sort"), "modelParams.sort must be a list of strings"),
        (lambda d: _set(d, {"user_id": 1}, "modelParams", "label_mapping"), "label_mapping must be an object of strings"),
        (lambda d: _set(d, "yes", "modelParams", "encryptionKeyRequired"), "encryptionKeyRequired must be true or false"),
        (lambda d: _set(d, "Mars/Olympus", "modelParams", "timeZone"), "timeZone 'Mars/Olympus' is not a known"),
        (lambda d: _set(d, ["x"], "modelParams", "table", 0), "modelParams.table[0] must be an object, got list"),
        (lambda d: _drop(d, "modelParams", "label_mapping", "cluster_name"),
         "order_of_csv_column label 'Cluster' has no key in label_mapping"),
        (lambda d: d["modelParams"]["sort"].append("Pin Code"),
         "modelParams.sort label 'Pin Code' is not in modelParams.order_of_csv_column"),
        (lambda d: d["modelParams"]["quote_column"].append("Village"),
         "modelParams.quote_column label 'Village' is not in modelParams.order_of_csv_column"),
        (lambda d: d["modelParams"]["order_of_csv_column"].append("State"),
         "modelParams.order_of_csv_column lists 'State' twice"),
        (lambda d: _set(d, "State", "modelParams", "label_mapping", "village_name"),
         "label_mapping maps both 'state_name' and 'village_name' to 'State'"),
        (lambda d: (_set(d, "Pin", "modelParams", "label_mapping", "pincode"),
                    d["modelParams"]["order_of_csv_column"].append("Pin")),
         "field 'pincode' is neither a PII field"),
    ],
)
def test_validation_errors(mutate, message):
    doc = raw()
    mutate(doc)
    with pytest.raises(ModelConfigError) as info:
        load_model_config(doc)
    assert message in str(info.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ModelConfigError, match="cannot read model config"):
        load_model_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ModelConfigError, match="is not valid JSON"):
        load_model_config(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    with pytest.raises(ModelConfigError, match="must be a JSON object, got list"):
        load_model_config(listed)
