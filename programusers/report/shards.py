"""The report's sorted shards on any Beam filesystem (local, gs://, s3://, hdfs://).

The pipeline writes records as sorted shards (runs of at most `rows_per_shard` records, each sorted on its
own; a JSON line holds a list of up to 4,096 [sort key, CSV line] records) into a private staging
directory, and a manifest naming the shards that count: those of bundles the runner committed, not of
attempts it retried. ``merge_shards`` then merges them (a k-way merge, streaming) into the one report
file, plain or password-zipped, still in staging, checking every shard's row count; io.files.publish
moves it into place whole. The merge runs in the submitting process so the zip password never enters the
pipeline (its graph, options or workers); it streams, with at most MAX_OPEN_SHARDS files open, so its
memory does not grow with the report's size, nor does the workers', which hold one shard.
"""
from __future__ import annotations

import contextlib
import heapq
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from programusers.io.files import is_local
from programusers.records import csv_line
from programusers.report import progress
from programusers.report.archive import encrypted_member

MANIFEST = "manifest.json"
# The most shards merged at once (one open file each); more are first merged into larger shards. A
# reader of gs:// or s3:// buffers 16 MiB: 32 of them stay within half a GiB.
MAX_OPEN_SHARDS, MAX_OPEN_REMOTE_SHARDS = 200, 32
_WRITE_LINES = 4096  # merged lines written at a time


class IncompleteShard(Exception):
    """A shard holds other than the rows its manifest entry says: the report would be wrong."""


def _create(path: str):
    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _write_shard(path: str, keyed_lines: Iterable) -> tuple[int, int]:
    """Writes [sort key, line] records, a JSON line per _WRITE_LINES of them; returns (rows, bytes) written.
    A JSON line per record cost three times as much to write and read back (0.6 s per 100k records)."""
    rows = size = 0
    with _create(path) as out:  # a retried bundle writes new files; the manifest names the committed ones
        for chunk in _chunks(keyed_lines):
            data = (json.dumps(chunk, ensure_ascii=False) + "\n").encode()
            out.write(data)
            rows, size = rows + len(chunk), size + len(data)
    return rows, size


def _chunks(items: Iterable, size: int = _WRITE_LINES) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _shard_name() -> str:
    return f"shard-{uuid.uuid4().hex}.jsonl"


class _WriteSortedShardsFn(beam.DoFn):
    """Lists of (sort key, CSV line) -> (shard name, rows, bytes) for each sorted shard written: one per
    `rows_per_shard` records of a bundle, one for the bundle's rest."""

    def __init__(self, staging_dir: str, rows_per_shard: int):
        self._staging_dir, self._rows_per_shard = staging_dir, rows_per_shard
        self._written = progress.counter(self.__class__, "rows_written")
        # The submitter shows the job's progress from what the workers publish beside the shards.
        self._progress = progress.Publisher(staging_dir)

    def setup(self):
        self._progress.setup()

    def start_bundle(self):
        self._held = []

    def _flush(self, count: int) -> tuple[str, int, int]:
        """Writes the first `count` records held as a shard."""
        # Ties on the sort key are broken by the whole line, so every runner writes the same bytes.
        shard, self._held = sorted(self._held[:count]), self._held[count:]
        name = _shard_name()
        rows, size = _write_shard(FileSystems.join(self._staging_dir, name), shard)
        self._written.inc(rows)
        return name, rows, size

    def process(self, keyed_lines: list):
        self._held.extend(keyed_lines)
        while len(self._held) >= self._rows_per_shard:
            yield self._flush(self._rows_per_shard)
        self._progress.tick()

    def finish_bundle(self):
        if self._held:
            yield GlobalWindows.windowed_value(self._flush(len(self._held)))
        self._progress.flush()


def _write_manifest(shards: list, staging_dir: str, header: list[str]) -> str:
    path = FileSystems.join(staging_dir, MANIFEST)
    with _create(path) as out:
        out.write(json.dumps({"header": header, "shards": sorted(shards)}).encode())
    return path


class WriteSortedShards(beam.PTransform):
    """Lists of (sort key, CSV line) -> sorted shards under `staging_dir` and its manifest (MANIFEST: the
    report's `header` and each committed shard's name, rows and bytes); yields the manifest's path. No
    manifest: no records.

    Each worker sorts what its bundles bring, `rows_per_shard` records at most, so no worker holds the
    report and nothing waits for all the records before writing; merge_shards does the rest.
    """

    def __init__(self, staging_dir: str, header: list[str], rows_per_shard: int):
        super().__init__()
        self._staging_dir, self._header, self._rows_per_shard = staging_dir, header, rows_per_shard

    def expand(self, keyed_line_lists):
        return (keyed_line_lists
                | "SortAndWrite" >> beam.ParDo(_WriteSortedShardsFn(self._staging_dir, self._rows_per_shard))
                # Without defaults: no shard, no manifest (a default would need a side input).
                | "ListShards" >> beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()
                | "WriteManifest" >> beam.Map(_write_manifest, self._staging_dir, self._header))


def _read_shard(path: str, rows: int) -> Iterator[list]:
    """A shard's [sort key, line] records; raises IncompleteShard at its end unless there were `rows`, or
    at records that do not read back (their text, which holds PII, stays out of the error)."""
    found, name = 0, path.rsplit("/", 1)[-1]
    with _open(path) as shard:
        for line in shard:
            try:
                chunk = json.loads(line)
            except ValueError:
                raise IncompleteShard(f"{name}: rows from {found + 1} unreadable") from None
            found += len(chunk)
            yield from chunk
    if found != rows:
        raise IncompleteShard(f"{name}: {found} of {rows} rows")


def _merged(staging_dir: str, shards: list[tuple]) -> Iterator[list]:
    with contextlib.ExitStack() as stack:
        # Each reader opens its file on first use and closes it at its end (or when the merge stops).
        readers = [stack.enter_context(contextlib.closing(_read_shard(FileSystems.join(staging_dir, name), rows)))
                   for name, rows, _ in shards]
        yield from heapq.merge(*readers)


def _fewer_shards(staging_dir: str, shards: list[tuple]) -> list[tuple]:
    """Merges shards, `fan_in` at a time into a new one (its inputs deleted), until at most that many
    are left: each record is rewritten about log_fan_in(shards) - 1 times. On object stores, where a
    reader buffers megabytes, fewer are read at once."""
    fan_in = MAX_OPEN_SHARDS if is_local(staging_dir) else MAX_OPEN_REMOTE_SHARDS
    while len(shards) > fan_in:
        merging, shards = shards[:fan_in], shards[fan_in:]
        name = _shard_name()
        rows, size = _write_shard(FileSystems.join(staging_dir, name), _merged(staging_dir, merging))
        FileSystems.delete([FileSystems.join(staging_dir, merged_name) for merged_name, _, _ in merging])
        shards.append((name, rows, size))
    return shards


def _write_merged(staging_dir: str, manifest: dict, out) -> int:
    """Writes the header and the shards' lines in sort order to `out`; returns the data rows written."""
    out.write(csv_line(manifest["header"]).encode("utf-8"))
    rows = 0
    for chunk in _chunks(_merged(staging_dir, _fewer_shards(staging_dir, [tuple(s) for s in manifest["shards"]]))):
        out.write("".join(line for _, line in chunk).encode("utf-8"))
        rows += len(chunk)
    return rows


def merge_shards(staging_dir: str, merged: str, when: datetime, password: str | None = None,
                 member: str | None = None, zip_crypto: bool = False) -> int:
    """Writes the shards of the manifest under `staging_dir`, merged in sort order, as `merged`: the CSV
    itself, or with a `password` a zip holding it as `member`. Returns the data rows written (0, and
    nothing written, without a manifest). Raises IncompleteShard when a shard lacks rows."""
    manifest_path = FileSystems.join(staging_dir, MANIFEST)
    if not FileSystems.exists(manifest_path):
        return 0
    with _open(manifest_path) as manifest_file:
        manifest = json.load(manifest_file)
    with _create(merged) as raw:
        if password is None:
            return _write_merged(staging_dir, manifest, raw)
        # A CSV line is shorter than the JSON line holding it with its sort key.
        upper_bound = len(csv_line(manifest["header"]).encode()) + sum(size for _, _, size in manifest["shards"])
        with encrypted_member(raw, member, password, when, upper_bound, zip_crypto) as out:
            return _write_merged(staging_dir, manifest, out)
