"""WriteSortedShards: each worker's report rows as sorted shards of at most rows_per_shard, and a manifest
naming them, read back as written."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline

from programusers import runners
from programusers.sealing import RunKey, SealedWriter
from programusers.transforms import shards

KEY = RunKey()


def test_bundles_become_sorted_shards_of_at_most_rows_per_shard_and_a_manifest(tmp_path):
    keyed_lines = [((f"k{(i * 7) % 23:02d}",), f"line {i}\r\n") for i in range(23)]
    with test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner")) as p:
        _ = (p | beam.Create([keyed_lines[i:i + 5] for i in range(0, 23, 5)])
             | shards.WriteSortedShards(str(tmp_path), ["Header"], rows_per_shard=4, public_key=KEY.public))
    manifest = json.loads((tmp_path / shards.MANIFEST).read_text())
    assert manifest["header"] == ["Header"] and max(rows for _, rows, _ in manifest["shards"]) <= 4
    written = []
    for name, rows, size in manifest["shards"]:
        shard = list(shards.read_shard(str(tmp_path / name), rows, KEY))
        assert shard == sorted(shard) and (tmp_path / name).stat().st_size == size
        written += shard
    assert sorted(written) == sorted(keyed_lines)


def test_no_report_rows_no_manifest(tmp_path):
    with test_pipeline.TestPipeline(options=runners.pipeline_options("DirectRunner")) as p:
        _ = p | beam.Create([]) | shards.WriteSortedShards(str(tmp_path), ["Header"], rows_per_shard=4,
                                                           public_key=KEY.public)
    assert not (tmp_path / shards.MANIFEST).exists() and not list(tmp_path.glob("shard-*"))


def test_shards_hold_no_clear_text_and_open_only_with_the_runs_key(tmp_path):
    secret = "teacher.one@pii.example"
    rows, size = shards.write_shard(str(tmp_path / "shard"), [(("k",), f"{secret},9876543210\r\n")], KEY.public)
    data = (tmp_path / "shard").read_bytes()
    assert (rows, size) == (1, len(data))
    assert secret.encode() not in data and b"9876543210" not in data and b"pii.example" not in data
    assert list(shards.read_shard(str(tmp_path / "shard"), 1, KEY)) == [(("k",), f"{secret},9876543210\r\n")]
    with pytest.raises(shards.IncompleteShard, match="does not open with this run's key") as failure:
        list(shards.read_shard(str(tmp_path / "shard"), 1, RunKey()))
    assert secret not in str(failure.value)


def test_a_chunk_whose_lengths_keys_and_lines_disagree_does_not_read_back(tmp_path):
    with open(tmp_path / "shard", "wb") as out:
        writer = SealedWriter(out, KEY.public)
        for frame in (b"[3, 4]", b'[["a"], ["b"]]', b"one,two\r\n"):  # 7 characters are 9
            writer.write(frame)
    with pytest.raises(shards.IncompleteShard, match="disagree"):
        list(shards.read_shard(str(tmp_path / "shard"), 2, KEY))
