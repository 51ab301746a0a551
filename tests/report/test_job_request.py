"""Report requests: the platform's request shape, duplicates, names and column widths."""
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from programusers.filters import parse_request
from programusers.report import job_request
from programusers.report.job_request import JobRequest

PROGRAM = "602512d8e6aefa27d9629bc3"


def test_command_line_filters_become_the_platform_request_shape():
    data = job_request.request_data(PROGRAM, [
        ("user_locations['district_id']", "in", "d1, d2,,"),
        ("program_enrollment.updated_at", ">=", "2023-01-01"),
        ("user_consent.user_id", "=", "u1")])
    assert data == {"filters": [
        {"table_name": "program_enrollment", "table_filters": [
            {"name": "program_id", "operator": "=", "value": PROGRAM},
            {"name": "user_locations['district_id']", "operator": "in", "value": ["d1", "d2"]},
            {"name": "updated_at", "operator": ">=", "value": "2023-01-01"}]},
        {"table_name": "user_consent", "table_filters": [
            {"name": "object_id", "operator": "=", "value": PROGRAM},
            {"name": "user_id", "operator": "=", "value": "u1"}]}]}
    parsed = parse_request(data)
    assert parsed.program_id == PROGRAM and parsed.user_ids == {"u1"}


def request(request_id, data, key="k", by="admin", tag="t"):
    return JobRequest(tag=tag, request_id=request_id, request_data=data, requested_by=by, encryption_key=key)


def test_duplicates_are_equal_data_key_and_requester_whatever_the_order_or_tag():
    a = request("A", {"filters": [], "x": {"b": 1, "a": 2}})
    same = request("B", {"x": {"a": 2, "b": 1}, "filters": []}, tag="other")
    others = [request("C", a.request_data, key="k2"), request("D", a.request_data, by="someone"),
              request("E", {"filters": [1]}), request("F", None)]
    groups = job_request.group_duplicates([a, *others[:2], same, *others[2:]])
    assert [[r.request_id for r in g] for g in groups] == [["A", "B"], ["C"], ["D"], ["E"], ["F"]]


def test_tag_name_and_message_conventions():
    assert job_request.tag_for("p1", "channel") == "p1:channel" and job_request.tag_for("p1", None) == "p1"
    assert len(job_request.new_request_id()) == 32 and job_request.new_request_id().isupper()
    # 31 May 2023 20:00 UTC is already 1 June in Kolkata.
    when = datetime(2023, 5, 31, 20, 0, tzinfo=UTC)
    assert job_request.report_name("R1", when, ZoneInfo("Asia/Kolkata")) == "R1_20230601"
    assert job_request.report_name("R1", when, ZoneInfo("UTC")) == "R1_20230531"
    assert len(job_request.err_message("x" * 1000)) == 300


@pytest.mark.parametrize("column,width", [("tag", 100), ("requested_by", 50), ("requested_channel", 50),
                                          ("encryption_key", 50)])
def test_values_too_wide_for_job_request_are_caught_before_the_insert(column, width):
    fields = {"tag": "p", "request_id": "R", "request_data": {}}
    assert JobRequest(**{**fields, column: "x" * width}).too_long() is None
    assert JobRequest(**{**fields, column: "x" * (width + 1)}).too_long() == column
