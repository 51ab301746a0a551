"""Sorted shards on any Beam filesystem (local, azfs://, gs://, s3://): their format, and the transform
that writes a pipeline's report rows as sorted shards with a manifest.

A shard is a run of at most `rows_per_shard` report rows, sorted on its own, as a sealed file (sealing.py)
of chunks of up to 4,096 (sort key, CSV line) pairs (see write_shard): the rows hold decrypted PII,
and only the process holding the run's key can read them back, wherever the shards rest. The manifest
names the shards that count: those of bundles the runner committed, not of attempts it retried. The
workers each sort what their bundles bring, so no worker holds the whole report and nothing waits for all
the report rows before writing; programusers/report/merge.py merges the shards into one file afterwards.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from programusers.report import tally
from programusers.sealing import RunKey, SealedFileError, SealedWriter, open_sealed

__all__ = ["MANIFEST", "IncompleteShard", "WriteSortedShards", "chunks", "create", "open_file", "read_shard",
           "read_shard_lines", "shard_name", "write_shard"]

MANIFEST = "manifest.json"
_WRITE_LINES = 4096  # report rows a JSON line, and merged lines written at a time


class IncompleteShard(Exception):
    """A shard holds other than the rows its manifest entry says: the report would be wrong."""


def create(path: str):
    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED)


def open_file(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def chunks(items: Iterable, size: int = _WRITE_LINES) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def shard_name() -> str:
    return f"shard-{uuid.uuid4().hex}.sealed"


def write_shard(path: str, keyed_lines: Iterable, public_key: bytes) -> tuple[int, int]:
    """Writes (sort key, line) pairs sealed for the run whose public key is `public_key`; returns (rows,
    bytes) written. Per 4,096 rows, three frames: the lines' lengths and their sort keys (JSON), then
    the lines themselves (UTF-8): a shard that is the whole report is copied out without decoding its keys,
    and no line is escaped. (A frame per row cost three times as much to write and read back.)"""
    rows = 0
    with create(path) as out:  # a retried bundle writes new files; the manifest names the committed ones
        sealed = SealedWriter(out, public_key)
        for chunk in chunks(keyed_lines):
            sealed.write(json.dumps([len(line) for _, line in chunk]).encode())
            sealed.write(json.dumps([sort_key for sort_key, _ in chunk], ensure_ascii=False).encode())
            sealed.write("".join(line for _, line in chunk).encode())
            rows += len(chunk)
    return rows, sealed.size


def _frames(path: str, rows: int, key: RunKey) -> Iterator[tuple[list[int], bytes, bytes]]:
    """A shard's chunks as (line lengths, sort keys' JSON, lines' UTF-8); raises IncompleteShard at its end
    unless there were `rows`, or at frames that do not read back (their text, which holds PII, stays out
    of the error)."""
    found, name = 0, path.rsplit("/", 1)[-1]
    with open_file(path) as shard:
        frames = open_sealed(shard, key)
        try:
            for lengths in frames:
                lengths = json.loads(lengths)
                sort_keys, lines = next(frames), next(frames)
                yield lengths, sort_keys, lines
                found += len(lengths)
        except (SealedFileError, ValueError, StopIteration) as error:
            reason = error if isinstance(error, SealedFileError) else "unreadable"
            raise IncompleteShard(f"{name}: rows from {found + 1}: {reason}") from None
    if found != rows:
        raise IncompleteShard(f"{name}: {found} of {rows} rows")


def read_shard(path: str, rows: int, key: RunKey) -> Iterator[tuple]:
    """A shard's (sort key, line) pairs, in its order (sorted); raises IncompleteShard as _frames does."""
    for lengths, sort_keys, lines in _frames(path, rows, key):
        text, start = lines.decode(), 0
        sort_keys = json.loads(sort_keys)
        if len(sort_keys) != len(lengths) or sum(lengths) != len(text):
            raise IncompleteShard(f"{path.rsplit('/', 1)[-1]}: a chunk's keys, lengths and lines disagree")
        for sort_key, length in zip(sort_keys, lengths):
            yield tuple(sort_key), text[start:start + length]
            start += length


def read_shard_lines(path: str, rows: int, key: RunKey) -> Iterator[bytes]:
    """A shard's lines in its order, as UTF-8 blocks of up to 4,096 lines, without their sort keys; raises
    IncompleteShard as _frames does."""
    for _, _, lines in _frames(path, rows, key):
        yield lines


class _WriteSortedShardsFn(beam.DoFn):
    """Lists of (sort key, CSV line) -> (shard name, rows, bytes) for each sorted shard written: one per
    `rows_per_shard` report rows of a bundle, one for the bundle's rest."""

    def __init__(self, staging_dir: str, rows_per_shard: int, public_key: bytes):
        self._staging_dir, self._rows_per_shard, self._public_key = staging_dir, rows_per_shard, public_key
        self._written = tally.counter(self.__class__, "report_rows_written")
        # The submitter shows the job's progress from what the workers publish beside the shards.
        self._progress = tally.Publisher(staging_dir)

    def setup(self):
        self._progress.setup()

    def start_bundle(self):
        self._held = []

    def _flush(self, count: int) -> tuple[str, int, int]:
        """Writes the first `count` report rows held as a shard."""
        # Ties on the sort key are broken by the whole line, so every runner writes the same bytes.
        shard, self._held = sorted(self._held[:count]), self._held[count:]
        name = shard_name()
        rows, size = write_shard(FileSystems.join(self._staging_dir, name), shard, self._public_key)
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
    with create(path) as out:
        out.write(json.dumps({"header": header, "shards": sorted(shards)}).encode())
    return path


class WriteSortedShards(beam.PTransform):
    """Lists of (sort key, CSV line) -> sorted shards under `staging_dir` and their manifest; yields the
    manifest's path. No report rows: no manifest.

    Args:
        staging_dir: the folder (any Beam filesystem path) the shards and the manifest are written to; the
            workers and the process that merges the shards must both reach it.
        header: the report's column labels, kept in the manifest for the merge.
        rows_per_shard: the most report rows a worker sorts in memory, so the most a shard holds.
        public_key: the public half of the run's key (sealing.RunKey), which the shards are sealed for.
    """

    def __init__(self, staging_dir: str, header: list[str], rows_per_shard: int, public_key: bytes):
        super().__init__()
        self._staging_dir, self._header, self._rows_per_shard = staging_dir, header, rows_per_shard
        self._public_key = public_key

    def expand(self, keyed_line_lists):
        return (keyed_line_lists
                | "SortAndWrite" >> beam.ParDo(_WriteSortedShardsFn(self._staging_dir, self._rows_per_shard,
                                                                    self._public_key))
                # Without defaults: no shard, no manifest (a default would need a side input).
                | "ListShards" >> beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()
                | "WriteManifest" >> beam.Map(_write_manifest, self._staging_dir, self._header))

    def display_data(self):
        return {"staging_dir": self._staging_dir, "rows_per_shard": self._rows_per_shard}
