"""The merge of a request's sorted shards into its one report file, plain or zipped."""
import csv
import io
import json
import tempfile
from datetime import datetime
from pathlib import Path
from unittest.mock import patch

import apache_beam as beam
import pytest
import pyzipper
from apache_beam.testing import test_pipeline
from hypothesis import given
from hypothesis import strategies as st

from programusers import report_rows, runners
from programusers.io import files
from programusers.report import merge
from programusers.report.archive import PasswordZip
from programusers.sealing import RunKey, SealedWriter
from programusers.transforms.shards import MANIFEST, IncompleteShard, WriteSortedShards

KEY = RunKey()

HEADER = ["Name", "District"]


def keyed_line(district, name):
    # The key is not the line's order: a merge by line alone would not pass.
    return [[district, name[::-1]], f"{name},{district}\r\n"]


def stage_shards(tmp_path, runs, extra=()):
    """Writes each run, sorted, as a shard in the shards' format, and a manifest naming them (not `extra`,
    the runs of attempts a runner retried)."""
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    entries = []
    for n, run in enumerate([*runs, *extra]):
        name = f"shard-{n:04d}.sealed"
        sealed = io.BytesIO()
        writer = SealedWriter(sealed, KEY.public)
        for chunk in (sorted(run)[:2], sorted(run)[2:]):  # two chunks of frames: lengths, keys, lines
            if chunk:
                writer.write(json.dumps([len(line) for _, line in chunk]).encode())
                writer.write(json.dumps([key for key, _ in chunk], ensure_ascii=False).encode())
                writer.write("".join(line for _, line in chunk).encode())
        data = sealed.getvalue()
        (staging_dir / name).write_bytes(data)
        if n < len(runs):
            entries.append([name, len(run), len(data)])
    (staging_dir / MANIFEST).write_text(json.dumps({"header": HEADER, "shards": entries}))
    return staging_dir


# Names of any characters: line breaks, U+2028, quotes, astral planes.
LINES = st.lists(st.builds(keyed_line, st.sampled_from(["", "A", "B", "b", "C, D"]), st.text(max_size=4)))
WHEN = datetime(2024, 1, 1)


@given(st.lists(LINES, max_size=6), st.lists(LINES, max_size=2), st.integers(2, 4))
def test_shards_merge_into_the_sorted_report_whatever_the_runs(runs, retried, max_open):
    with tempfile.TemporaryDirectory() as tmp, patch.object(merge, "MAX_OPEN_SHARDS", max_open):
        staging_dir = stage_shards(Path(tmp), runs, retried)
        merged = Path(tmp) / "report.csv"
        rows = merge.merge_shards(str(staging_dir), str(merged), key=KEY, when=WHEN)
        every = sorted(line for run in runs for line in run)
        assert rows == len(every)
        assert merged.read_bytes().decode() == "Name,District\r\n" + "".join(line for _, line in every)


@pytest.mark.parametrize("declared,cut,error", [(3, False, "2 of 3 rows"), (1, False, "2 of 1 rows"),
                                                 (2, True, "rows from 1: frame 3 cut short")])
def test_a_shard_unlike_its_manifest_entry_fails_the_merge(tmp_path, declared, cut, error):
    staging_dir = stage_shards(tmp_path, [[keyed_line("A", "secret name"), keyed_line("B", "other name")]])
    manifest = json.loads((staging_dir / MANIFEST).read_text())
    manifest["shards"][0][1] = declared
    (staging_dir / MANIFEST).write_text(json.dumps(manifest))
    if cut:  # a shard cut off in the middle of its last row
        shard = staging_dir / manifest["shards"][0][0]
        shard.write_bytes(shard.read_bytes()[:-9])
    with pytest.raises(IncompleteShard, match=error) as failure:
        merge.merge_shards(str(staging_dir), str(tmp_path / "report.csv"), key=KEY, when=WHEN)
    assert "name" not in str(failure.value)  # the rows' text stays out of the error


def test_no_manifest_no_report(tmp_path):
    assert merge.merge_shards(str(tmp_path), str(tmp_path / "report.csv"), key=KEY, when=WHEN) == 0
    assert not (tmp_path / "report.csv").exists()


# --- what WriteSortedShards writes, merged -----------------------------------------------------------

COLUMNS = ["Id", "District", "Name"]


def report_row(i):
    # Several ids share a district; a few districts are empty (sorted first).
    # Some names hold a line break: the merge counts report rows, not lines.
    name = f'N "{i}"' + ("\r\nline 2" if i % 7 == 0 else "")
    return {"Id": f"u{(i * 37) % 101:03d}", "District": ["", "B", "A", "C, D", "b"][i % 5], "Name": name}


def sort_key(r):
    return r["District"], r["Id"]


def write_and_merge(rows, tmp_path, rows_per_shard, zipped=None):
    """Writes the report rows through WriteSortedShards (7 a list, as lookup batches come) and merges them;
    returns (the manifest's shards, rows merged, the merged file)."""
    staging_dir, destination = str(tmp_path / "temp"), str(tmp_path / "out" / "report")
    keyed_lines = [(sort_key(r), report_rows.csv_line(r[label] for label in COLUMNS)) for r in rows]
    batches = [keyed_lines[i:i + 7] for i in range(0, len(keyed_lines), 7)]
    with test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner")) as p:
        _ = p | beam.Create(batches) | WriteSortedShards(staging_dir, COLUMNS, rows_per_shard, KEY.public)
    manifest = tmp_path / "temp" / MANIFEST
    entries = json.loads(manifest.read_text())["shards"] if manifest.exists() else []
    (tmp_path / "out").mkdir()
    written = merge.merge_shards(staging_dir, destination, key=KEY, when=WHEN, zipped=zipped)
    files.remove_dir(staging_dir)
    assert not (tmp_path / "temp").exists()
    return entries, written, destination


@pytest.mark.parametrize("password", [None, "pass word"])
def test_sorted_shards_merge_into_one_sorted_csv(tmp_path, password):
    rows = [report_row(i) for i in range(101)]
    shards, written, destination = write_and_merge(rows, tmp_path, rows_per_shard=10,
                                                   zipped=PasswordZip(password, "report.csv") if password else None)
    assert written == 101 and len(shards) > 3 and max(n for _, n, _ in shards) == 10  # never more
    if password:
        with pyzipper.AESZipFile(destination) as archive:
            archive.setpassword(password.encode())
            text = archive.read("report.csv").decode("utf-8")
    else:
        with open(destination, newline="", encoding="utf-8") as f:
            text = f.read()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == COLUMNS
    assert lines[1:] == [[r["Id"], r["District"], r["Name"]] for r in sorted(rows, key=sort_key)]
    assert text.count("\r\n") == 102 + 15 and text.endswith("\r\n")  # 15 names of two lines


def test_no_report_rows_no_file(tmp_path):
    shards, written, _ = write_and_merge([], tmp_path, rows_per_shard=10)
    assert shards == [] and written == 0 and not (tmp_path / "out" / "report").exists()
