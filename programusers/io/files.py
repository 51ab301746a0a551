"""Files on any Beam filesystem (local, gs://, s3://, hdfs://): private folders, moving a finished file
into place whole, listing and removing folders. Nothing here knows about reports."""
from __future__ import annotations

import os

from apache_beam.io.filesystems import FileSystems

__all__ = ["exists", "is_local", "list_dirs", "make_private_dir", "publish", "remove_dir", "same_local_filesystem"]


def is_local(path: str) -> bool:
    return "://" not in path


def exists(path: str) -> bool:
    """Whether the file `path` exists. By listing: Beam 2.73's azfs `exists` raises for a missing blob."""
    if is_local(path):
        return os.path.exists(path)
    return any(m.path == path for m in FileSystems.match([path])[0].metadata_list)


def make_private_dir(path: str) -> None:
    """A staging folder only this user can enter (object stores have no folders: nothing to do)."""
    if is_local(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)


def same_local_filesystem(a: str, b: str) -> bool:
    """Whether two existing local folders are on one filesystem, where a rename moves a file whole."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def publish(staged: str, destination: str, file_mode: int) -> None:
    """Moves a complete local file into place at the local path `destination`, where it appears whole or
    not at all: it gets `file_mode`, then is renamed (the caller keeps both on one filesystem)."""
    os.chmod(staged, file_mode)
    os.replace(staged, destination)


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
    if is_local(path) and os.path.exists(path):
        FileSystems.delete([path])
