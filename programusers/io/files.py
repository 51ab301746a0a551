"""Report files on any Beam filesystem (local, gs://, s3://, hdfs://).

The pipeline writes records as sorted range shards (each a complete CSV with the header) into a private
staging directory; ``merge_shards`` then concatenates them in range order into the one report file, plain
or password-zipped, still in staging, counting its rows; ``publish`` moves it into place whole. The merge
runs in the submitting process so the zip password never enters the pipeline (its graph, options or
workers); it streams, so memory stays flat whatever the report's size.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
from datetime import datetime

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsSingleton

from programusers.archive import encrypted_member
from programusers.records import csv_line
from programusers.shards import MAX_SHARDS, range_bounds, shard_of

_SHARD = "shard-{:05d}.csv"
_SHARDS = "shard-*.csv"


def _create(path: str):
    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _sort_keys(keyed_lines: list) -> list:
    return [key for key, _ in keyed_lines]


def _by_range(keyed_lines: list, bounds):
    """A list of (sort key, line) -> (shard, its part of the list) for each shard it touches."""
    shards = {}
    for keyed_line in keyed_lines:
        shards.setdefault(shard_of(keyed_line[0], bounds), []).append(keyed_line)
    return shards.items()


class _WriteShardFn(beam.DoFn):
    def __init__(self, temp_dir: str):
        self._temp_dir = temp_dir

    def process(self, shard, header):
        index, parts = shard
        path = FileSystems.join(self._temp_dir, _SHARD.format(index))
        with _create(path) as out:  # a retried bundle rewrites the same file
            out.write(csv_line(header).encode("utf-8"))
            # Ties on the sort key are broken by the whole line, so every runner writes the same bytes.
            for _, line in sorted(itertools.chain.from_iterable(parts)):
                out.write(line.encode("utf-8"))
        yield path


class WriteSortedShards(beam.PTransform):
    """Lists of (sort key, CSV line) -> sorted range shards under `temp_dir`, each headed by the labels in
    `header` (a PCollection of that one list); yields their paths.

    Shard bounds come from quantiles of the sort keys, as many shards as `rows_per_shard` asks for (up
    to MAX_SHARDS), so one worker holds one shard, not the report. Elements are lists (batches) so that
    the runner moves and groups a few per bundle, not one per line.
    """

    def __init__(self, temp_dir: str, header, rows_per_shard: int):
        super().__init__()
        self._temp_dir, self._header, self._rows_per_shard = temp_dir, header, rows_per_shard

    def expand(self, batches):
        count = batches | "Lengths" >> beam.Map(len) | "Count" >> beam.CombineGlobally(sum)
        bounds = (batches
                  | "SortKeys" >> beam.Map(_sort_keys)
                  | "SampleSortKeys" >> beam.ApproximateQuantiles.Globally(MAX_SHARDS + 1, input_batched=True)
                  | "RangeBounds" >> beam.Map(range_bounds, AsSingleton(count), self._rows_per_shard))
        return (batches
                | "AssignRanges" >> beam.FlatMap(_by_range, AsSingleton(bounds))
                | "GroupRanges" >> beam.GroupByKey()
                | "SortAndWrite" >> beam.ParDo(_WriteShardFn(self._temp_dir), AsSingleton(self._header)))


def _written(lines, out, skip_header: bool):
    for n, line in enumerate(lines):
        if n or not skip_header:
            out.write(line.encode("utf-8"))
        yield line


def _concatenate(shards: list[str], out) -> int:
    """Copies the shards into `out` (the header once) and returns the data rows copied, counted as
    records by a CSV reader (a quoted value may hold a line break)."""
    rows = 0
    for n, path in enumerate(shards):
        with _open(path) as shard:
            lines = io.TextIOWrapper(shard, encoding="utf-8", newline="")
            rows += sum(1 for _ in csv.reader(_written(lines, out, skip_header=n > 0))) - 1
    return rows


def merge_shards(temp_dir: str, merged: str, when: datetime, password: str | None = None,
                 member: str | None = None, zip_crypto: bool = False) -> int:
    """Writes the shards under `temp_dir`, in order, as `merged`: the CSV itself, or with a `password` a
    zip holding it as `member`. Returns the data rows written (0, and nothing written, without shards)."""
    found = FileSystems.match([FileSystems.join(temp_dir, _SHARDS)])[0].metadata_list
    shards = sorted(m.path for m in found)
    if not shards:
        return 0
    with _create(merged) as raw:
        if password is None:
            return _concatenate(shards, raw)
        upper_bound = sum(m.size_in_bytes for m in found)
        with encrypted_member(raw, member, password, when, upper_bound, zip_crypto) as out:
            return _concatenate(shards, out)


def is_local(path: str) -> bool:
    return "://" not in path


def make_private_dir(path: str) -> None:
    """A staging folder only this user can enter (object stores have no folders: nothing to do)."""
    if is_local(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)


def same_local_filesystem(a: str, b: str) -> bool:
    """Whether two existing local folders are on one filesystem, where a rename moves a file whole."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def publish(staged: str, destination: str, file_mode: int) -> None:
    """Moves a complete report from staging to its published path, where it appears whole or not at all.

    Local: the file gets `file_mode`, then is renamed into place (staging is on the output's filesystem,
    see ExhaustRun). Object stores: an object becomes visible only once fully written, so a copy is enough.
    """
    if is_local(staged) and is_local(destination):
        os.chmod(staged, file_mode)
        os.replace(staged, destination)
    else:
        FileSystems.copy([staged], [destination])


def list_dirs(parent: str) -> list[str]:
    """The names of the folders directly under `parent` (on object stores: of the prefixes holding files)."""
    if is_local(parent):
        return sorted(e.name for e in os.scandir(parent) if e.is_dir()) if os.path.isdir(parent) else []
    found = FileSystems.match([FileSystems.join(parent, "*", "*")])[0].metadata_list
    prefix = parent.rstrip("/") + "/"
    return sorted({m.path[len(prefix):].split("/", 1)[0] for m in found if m.path.startswith(prefix)})


def remove_dir(path: str) -> None:
    """Deletes a temporary directory and its files (object stores have no directories to delete)."""
    files = [m.path for m in FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(path):
        FileSystems.delete([path])
