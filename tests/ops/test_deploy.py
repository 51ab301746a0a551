"""Every `programusers ...` command in the Kubernetes manifests is one the CLI accepts, and secrets stay
out of the ConfigMap."""
from pathlib import Path

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from programusers.cli import build_parser
from programusers.model_config import load_model_config
from programusers.report.store import ReportStore

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCUMENTS = [(path.name, doc) for path in sorted(DEPLOY.glob("*.yaml"))
             for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers(doc):
    spec = doc.get("spec", {})
    spec = spec.get("jobTemplate", {}).get("spec", spec)
    return spec.get("template", {}).get("spec", {}).get("containers", [])


COMMANDS = [(f"{name}:{c['name']}", (c.get("command") or [])[1:] + c.get("args", []))
            for name, doc in DOCUMENTS for c in containers(doc) if (c.get("command") or [""])[0] == "programusers"]


def test_the_manifests_run_every_job():
    assert {argv[0] for _, argv in COMMANDS} == {"ingest", "exhaust", "init", "serve"}


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_command_is_accepted_by_the_cli_and_beam(where, argv):
    args, beam_args = build_parser().parse_known_args(argv)
    options = PipelineOptions(beam_args)
    known = options.get_all_options()
    unknown = [a for a in beam_args if a.startswith("--") and a[2:].split("=")[0] not in known]
    # Flink's own options (e.g. --checkpointing_interval) reach the Java side only when the pipeline is
    # submitted as an uber jar; they use Beam's underscore style, unlike our CLI's flags.
    if known.get("flink_submit_uber_jar"):
        unknown = [a for a in unknown if "-" in a[2:].split("=")[0]]
    assert not unknown, f"{where}: flags neither the CLI nor Beam knows: {unknown}"
    assert callable(args.handler)


def test_config_map_holds_a_valid_model_config_and_no_secret():
    config_map = next(doc for _, doc in DOCUMENTS if doc["kind"] == "ConfigMap")
    load_model_config(yaml.safe_load(config_map["data"]["model-config.json"]))
    secret = next(doc for _, doc in DOCUMENTS if doc["kind"] == "Secret")
    assert not set(secret["stringData"]) & set(config_map["data"])
    assert all(v == "<set-out-of-band>" for v in secret["stringData"].values())


def test_the_exhaust_publishes_to_the_azure_container_its_config_and_secret_name():
    config_map = next(doc for _, doc in DOCUMENTS if doc["kind"] == "ConfigMap")
    secret = next(doc for _, doc in DOCUMENTS if doc["kind"] == "Secret")
    config = load_model_config(yaml.safe_load(config_map["data"]["model-config.json"]))
    assert {config.storage_key_config, config.storage_secret_config} <= set(secret["stringData"])
    environ = {config.storage_key_config: "sunbirdreports", config.storage_secret_config: "a2V5"}
    assert ReportStore.resolve(config, environ=environ).output == "azfs://sunbirdreports/reports/ml_reports"
