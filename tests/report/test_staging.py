"""Staging: a request's private folder named after its lease, the staging location, the move into place."""
import os
import stat
from contextlib import nullcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from programusers import runners
from programusers.report.job_request import JOB_ID, JobRequest
from programusers.report.request_store import lease_key
from programusers.report.staging import Staging, folder_name, lease_of_folder
from programusers.report.store import ReportStore


def local(path) -> ReportStore:
    return ReportStore("local", str(path))


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=40))
def test_a_staging_folder_names_its_requests_lease(tag, request_id):
    key = lease_key(JobRequest(tag=tag, request_id=request_id, request_data=None))
    assert -2**63 <= key < 2**63  # PostgreSQL's bigint
    assert lease_of_folder(folder_name(key)) == key
    assert lease_key(JobRequest(tag=tag, request_id=request_id + "x", request_data=None)) != key


@pytest.mark.parametrize("name", ["shard-00001.csv", "tmp", "0123456789abcdef-short", "0123456789ABCDEF-" + "0" * 32])
def test_other_folders_in_staging_are_not_taken_for_request_folders(name):
    assert lease_of_folder(name) is None


def test_a_report_waits_in_a_private_folder_and_is_published_whole(tmp_path):
    staging = Staging.prepare(str(tmp_path / "staging"), local(tmp_path / "out"), runners.pipeline_options("DirectRunner"),
                              file_mode=0o640)
    assert stat.S_IMODE(os.stat(staging.location).st_mode) == 0o700
    with staging.folder(lease_key(JobRequest(tag="t", request_id="R", request_data=None))) as folder:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        (tmp_path / folder / "R.csv").write_text("a,b\r\n")
        published = staging.publish(os.path.join(folder, "R.csv"), "R.csv")
    assert published == str(tmp_path / "out" / JOB_ID / "R.csv") and not os.path.exists(folder)
    assert stat.S_IMODE(os.stat(published).st_mode) == 0o640


def test_the_folders_of_dead_runs_are_removed_and_the_others_kept(tmp_path):
    staging = Staging.prepare(str(tmp_path), local(tmp_path / "out"), runners.pipeline_options("DirectRunner"),
                              file_mode=0o600)
    dead, alive = folder_name(1), folder_name(-2)
    for name in (dead, alive, "not-a-request"):
        (tmp_path / name).mkdir()

    def if_free(key):  # as RequestStore.if_free, with lease 1 free and lease -2 held by a live run
        return nullcontext(key == 1)

    assert staging.remove_dead(if_free) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive, "not-a-request", "out"])


def test_workers_elsewhere_need_a_staging_they_share(tmp_path):
    options = runners.pipeline_options("PrismRunner", ["--environment_type=EXTERNAL", "--prism_location=/bin/true"])
    with pytest.raises(ValueError, match="pass --staging with a location they share"):
        Staging.prepare(None, local(tmp_path), options, file_mode=0o600)
    shared = "azfs://devstoreaccount1/reports/staging"
    assert Staging.prepare(shared, ReportStore("azure", "azfs://devstoreaccount1/reports/out"), options,
                           file_mode=0o600).location == shared
