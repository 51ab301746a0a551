"""A request's sorted shards merged into its one report file, plain or password-zipped, in staging.

The pipeline leaves its report rows as sorted shards and a manifest in the request's staging folder
(programusers/transforms/shards.py); `merge_shards` merges them (a k-way merge, streaming) into the one
report file, checking every shard's row count, and staging.py then publishes it whole. The merge runs in
the submitting process so the zip password never enters the pipeline (its graph, options or workers); it
streams, with at most MAX_OPEN_SHARDS files open, so its memory does not grow with the report's size, nor
does the workers', which hold one shard.
"""
from __future__ import annotations

import contextlib
import heapq
import json
from collections.abc import Iterator
from datetime import datetime

from apache_beam.io.filesystems import FileSystems

from programusers.io.files import exists, is_local
from programusers.report.archive import PasswordZip, encrypted_member
from programusers.report_rows import csv_line
from programusers.sealing import RunKey
from programusers.transforms.shards import (
    MANIFEST,
    chunks,
    create,
    open_file,
    read_shard,
    read_shard_lines,
    shard_name,
    write_shard,
)

# The most shards merged at once (one open file each); more are first merged into larger shards. A
# reader of gs:// or s3:// buffers 16 MiB: 32 of them stay within half a GiB.
MAX_OPEN_SHARDS, MAX_OPEN_REMOTE_SHARDS = 200, 32


def _merged(staging_dir: str, shards: list[tuple], key: RunKey) -> Iterator[list]:
    with contextlib.ExitStack() as stack:
        # Each reader opens its file on first use and closes it at its end (or when the merge stops).
        readers = [stack.enter_context(contextlib.closing(read_shard(FileSystems.join(staging_dir, name), rows, key)))
                   for name, rows, _ in shards]
        yield from heapq.merge(*readers)


def _fewer_shards(staging_dir: str, shards: list[tuple], key: RunKey) -> list[tuple]:
    """Merges shards, `fan_in` at a time into a new one (its inputs deleted), until at most that many
    are left: each report row is rewritten about log_fan_in(shards) - 1 times. On object stores, where a
    reader buffers megabytes, fewer are read at once."""
    fan_in = MAX_OPEN_SHARDS if is_local(staging_dir) else MAX_OPEN_REMOTE_SHARDS
    while len(shards) > fan_in:
        merging, shards = shards[:fan_in], shards[fan_in:]
        name = shard_name()
        rows, size = write_shard(FileSystems.join(staging_dir, name), _merged(staging_dir, merging, key), key.public)
        FileSystems.delete([FileSystems.join(staging_dir, merged_name) for merged_name, _, _ in merging])
        shards.append((name, rows, size))
    return shards


def _write_merged(staging_dir: str, manifest: dict, key: RunKey, out) -> int:
    """Writes the header and the shards' lines in sort order to `out`; returns the data rows written."""
    out.write(csv_line(manifest["header"]).encode("utf-8"))
    shards = _fewer_shards(staging_dir, [tuple(s) for s in manifest["shards"]], key)
    if len(shards) == 1:  # sorted already: copied as it is
        (name, rows, _), = shards
        for lines in read_shard_lines(FileSystems.join(staging_dir, name), rows, key):
            out.write(lines)
        return rows
    rows = 0
    for chunk in chunks(_merged(staging_dir, shards, key)):
        out.write("".join(line for _, line in chunk).encode("utf-8"))
        rows += len(chunk)
    return rows


def merge_shards(staging_dir: str, merged: str, *, key: RunKey, when: datetime, zipped: PasswordZip | None = None
                 ) -> int:
    """Writes the shards of the manifest under `staging_dir` (sealed for `key`), merged in sort order, as
    `merged`: the CSV itself, or a zip holding it as `zipped` says, dated `when`; the report rows
    are opened in memory only. Returns the data rows written (0, and nothing written, without a manifest).
    Raises IncompleteShard when a shard lacks rows or does not open."""
    manifest_path = FileSystems.join(staging_dir, MANIFEST)
    if not exists(manifest_path):
        return 0
    with open_file(manifest_path) as manifest_file:
        manifest = json.load(manifest_file)
    with create(merged) as raw:
        if zipped is None:
            return _write_merged(staging_dir, manifest, key, raw)
        # A CSV line is shorter than the sealed JSON holding it with its sort key.
        upper_bound = len(csv_line(manifest["header"]).encode()) + sum(size for _, _, size in manifest["shards"])
        with encrypted_member(raw, zipped, when=when, size=upper_bound) as out:
            return _write_merged(staging_dir, manifest, key, out)
