"""The report store's settings (SPEC §6) as the platform's model configs spell them, flags over them, and
the refusals that keep a run from publishing anywhere but where it was told; no service needed."""
import argparse
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_model_config import raw

from programusers.commands.report import _expiry
from programusers.model_config import ModelConfigError, load_model_config
from programusers.report.store import ReportStore, StoreConfigError, StoreEndpoints, signed_link

KEY = "a2V5IG9mIHRoZSB0ZXN0IGFjY291bnQ="
ENV = {"azure_storage_key": "acct1", "azure_storage_secret": KEY, "aws_storage_key": "AKIDEXAMPLE",
       "aws_storage_secret": KEY}


def config(**params):
    doc = raw()
    doc["modelParams"].update(params)
    return load_model_config(doc)


AZURE = dict(store="azure", container="reports", key="ml_reports/")


def test_the_platforms_azure_settings_publish_under_its_container_and_key():
    store = ReportStore.resolve(config(**AZURE), environ=ENV)
    assert (store.kind, store.output, store.container) == ("azure", "azfs://acct1/reports/ml_reports", "reports")
    assert store.account.blob_endpoint == "https://acct1.blob.core.windows.net"


def test_storage_key_and_secret_config_name_the_variables_that_hold_the_account():
    named = config(**AZURE, storageKeyConfig="report_account", storageSecretConfig="report_key")
    store = ReportStore.resolve(named, environ={"report_account": "acct2", "report_key": KEY})
    assert store.output.startswith("azfs://acct2/") and store.account.key == KEY
    with pytest.raises(StoreConfigError, match=r"\$report_account and its key in \$report_key"):
        ReportStore.resolve(named, environ=ENV)


def test_flags_override_the_config():
    store = ReportStore.resolve(config(**AZURE), container="other",
                                endpoints=StoreEndpoints(azure="http://127.0.0.1:10000/acct1"), environ=ENV)
    assert store.output == "azfs://acct1/other/ml_reports" and store.account.blob_endpoint.startswith("http://127")
    assert ReportStore.resolve(config(**AZURE), store="local", environ={}).output == "ml_reports/"
    assert ReportStore.resolve(config(), store="azure", container="c", environ=ENV).output == "azfs://acct1/c/ml_reports"


@pytest.mark.parametrize("settings,flags,message", [
    (AZURE, {"output": "/srv/reports"}, "--output /srv/reports is on the local store but the model config's store "
                                        "'azure' is azure: pass --store local"),
    ({}, {"output": "azfs://acct1/c/x"}, "is on the azure store but the model config's store 'local' is local"),
    ({}, {"store": "azure", "output": "/srv"}, "--output /srv is on the local store but --store azure is azure"),
    (dict(AZURE, store="gcloud", container="bucket"), {}, "the gcloud store is not available in this build"),
    ({}, {"output": "hdfs://nn/reports"}, "hdfs:// is not a report store"),
    (AZURE, {"output": "azfs://someoneelse/cont/x"}, "names the storage account someoneelse, but the model config's storage variables hold the key of acct1"),
    (AZURE, {"output": "azfs://acct1/../x"}, "an Azure Blob path is azfs://<account>/<container>/<blob>"),
    ({}, {"store": "azure"}, "the azure store needs a container"),
    (dict(AZURE, store="s3", container="bucket", storageKeyConfig="unset_variable"), {},
     "the s3 store needs its account in $unset_variable and its key in $aws_storage_secret"),
    (dict(AZURE, store="s3", container="bucket"), {"output": "s3://x/y"}, "--output s3://x/y: an S3 path is "),
])
def test_a_store_the_run_cannot_use_is_refused_never_ignored(settings, flags, message):
    with pytest.raises(StoreConfigError) as refusal:
        ReportStore.resolve(config(**settings), environ=ENV, **flags)
    assert message in str(refusal.value), str(refusal.value)
    assert KEY not in str(refusal.value)


def test_the_s3_store_publishes_under_its_bucket_and_key_with_the_platforms_variables():
    environ = {"aws_storage_key": "AKIDEXAMPLE", "aws_storage_secret": "secret-of-the-test"}
    store = ReportStore.resolve(config(store="s3", container="reports-bucket", key="ml_reports/"), environ=environ,
                                endpoints=StoreEndpoints(s3="http://127.0.0.1:8333"))
    assert (store.kind, store.output, store.container) == ("s3", "s3://reports-bucket/ml_reports", "reports-bucket")
    url = signed_link("s3://reports-bucket/ml_reports/program-user-exhaust/R.zip", config(store="s3", container="b"),
                      expires_in=timedelta(minutes=30), environ=environ,
                      endpoints=StoreEndpoints(s3="http://127.0.0.1:8333"))
    assert url.startswith("http://127.0.0.1:8333/reports-bucket/ml_reports/program-user-exhaust/R.zip?")
    assert "X-Amz-Expires=1800" in url and "X-Amz-Signature=" in url and "secret-of-the-test" not in url


@pytest.mark.parametrize("params,message", [
    ({"store": "dropbox"}, "modelParams.store must be one of local, azure, s3, gcloud"),
    ({"store": "azure"}, "modelParams.container is required for the azure store"),
    ({"store": "azure", "container": ""}, "modelParams.container must be a non-empty string"),
])
def test_store_settings_are_checked_once_at_load(params, message):
    with pytest.raises(ModelConfigError, match=message):
        config(**params)


def test_a_link_is_read_only_and_expires_and_a_local_reports_link_is_its_path():
    url = signed_link("azfs://acct1/reports/ml_reports/program-user-exhaust/R_20261206.zip", config(**AZURE),
                      expires_in=timedelta(minutes=30), environ=ENV)
    assert url.startswith("https://acct1.blob.core.windows.net/reports/ml_reports/program-user-exhaust/R_20261206.zip?")
    assert "sp=r&" in url and "spr=https&" in url and "se=" in url and "sig=" in url and KEY not in url
    assert signed_link("ml_reports/program-user-exhaust/R.csv", config(), environ={}) == \
        "ml_reports/program-user-exhaust/R.csv"


@given(st.integers(1, 7 * 24 * 3600))
def test_link_expiries_are_durations_up_to_seven_days(seconds):
    assert _expiry(f"{seconds}s") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0m", "8d", "30", "-5m", "1w", "m", "1.5h"])
def test_other_expiries_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _expiry(text)
