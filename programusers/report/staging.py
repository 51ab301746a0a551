"""Where a report waits until it is whole, and how it is published (SPEC §5, complete-only reports).

Each request is produced in a private folder of the staging location: the pipeline's sorted shards,
sealed for this process (sealing.py), then the merged file. The merged file is written on this machine:
in the request's folder when staging is local, else in a private local folder of its own (the `scratch`),
so that a report's rows are opened in this process's memory only. Only the finished file is moved
(local) or uploaded (object stores) into `<output>/program-user-exhaust/`, whole. A folder is named after
its request's lease, so a later run can tell whether the process that made it is alive, and removes the
folders of those that died.
"""
from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from programusers.io import files
from programusers.report.job_request import JOB_ID
from programusers.report.store import ReportStore

_FOLDER = re.compile(r"([0-9a-f]{16})-[0-9a-f]{32}")


def folder_name(lease_key: int) -> str:
    """A request's staging folder: its lease key (64 bits, hex) and a random part."""
    return f"{lease_key & (2**64 - 1):016x}-{uuid.uuid4().hex}"


def lease_of_folder(name: str) -> int | None:
    """The lease key in a staging folder's name; None for a name of another shape."""
    if not (match := _FOLDER.fullmatch(name)):
        return None
    value = int(match[1], 16)
    return value - 2**64 if value >= 2**63 else value


def workers_share_this_machine(options: PipelineOptions) -> bool:
    """Whether the pipeline's workers run in this process (LOOPBACK, the in-process runner), so a local
    staging folder is theirs too."""
    environment = options.view_as(PortableOptions).environment_type
    return environment in (None, "LOOPBACK") or options.view_as(StandardOptions).runner.endswith("FnApiRunner")


def _private_temp_dir() -> str:
    local = os.path.join(tempfile.gettempdir(), f"programusers-staging-{os.getuid()}")
    files.make_private_dir(local)
    return local


def _location(path: str | None, output: str) -> str:
    """The staging location: private, never under the published output. A local output needs local staging
    on the same filesystem, so that the report is moved into place with a rename. By default: a folder only
    this user can read in the temp dir, or beside the output when the temp dir is on another filesystem."""
    if path:
        if files.is_local(path):
            files.make_private_dir(path)
        if files.is_local(output) and not (files.is_local(path) and files.same_local_filesystem(path, output)):
            raise ValueError("--staging must be on the same filesystem as --output, so that a report is "
                             "moved into place whole")
        return path
    local = _private_temp_dir()
    if not files.is_local(output) or files.same_local_filesystem(local, output):
        return local
    user = os.path.basename(local)
    beside = os.path.join(os.path.dirname(os.path.abspath(output)), "." + user)
    files.make_private_dir(beside)
    return beside


@dataclass(frozen=True)
class Staging:
    """An exhaust run's staging `location` and the `store` its reports are published to, with `file_mode`
    (local files); `scratch`: the local folder of merged files when the location is not local."""
    location: str
    store: ReportStore
    file_mode: int
    scratch: str | None = None

    @classmethod
    def prepare(cls, path: str | None, store: ReportStore, options: PipelineOptions, *, file_mode: int) -> Staging:
        """The staging at `path` (default: see _location) for reports published to `store`, both made ready;
        raises ValueError when the pipeline's workers could not reach it."""
        if not path and not workers_share_this_machine(options):
            raise ValueError("the pipeline's workers run elsewhere: pass --staging with a location they share "
                             "(e.g. a private container); the default staging folder is on this machine only")
        if files.is_local(store.output):
            os.makedirs(os.path.join(store.output, JOB_ID), exist_ok=True)
        location = _location(path, store.output)
        return cls(location, store, file_mode, None if files.is_local(location) else _private_temp_dir())

    @property
    def output(self) -> str:
        return self.store.output

    def remove_dead(self, if_free: Callable[[int], AbstractContextManager[bool]]) -> int:
        """Removes the folders of requests whose producing process died (and their merged files in the
        scratch): `if_free(lease key)` holds the lease for its block when it is free (RequestStore.if_free).
        Returns how many."""
        removed = 0
        for name in files.list_dirs(self.location):
            if (key := lease_of_folder(name)) is None:
                continue
            with if_free(key) as dead:
                if dead:
                    self._remove(FileSystems.join(self.location, name))
                    removed += 1
        return removed

    def _remove(self, path: str) -> None:
        files.remove_dir(path)
        if self.scratch:
            files.remove_dir(self.merge_dir(path))

    def merge_dir(self, staging_dir: str) -> str:
        """Where the merged file of the request staged in `staging_dir` is written: on this machine."""
        if not self.scratch:
            return staging_dir
        return os.path.join(self.scratch, staging_dir.rstrip("/").rsplit("/", 1)[-1])

    @contextmanager
    def folder(self, lease_key: int) -> Iterator[str]:
        """A private folder for one request, removed at the end of the block."""
        path = FileSystems.join(self.location, folder_name(lease_key))
        files.make_private_dir(path)
        files.make_private_dir(self.merge_dir(path))
        try:
            yield path
        finally:
            self._remove(path)

    @staticmethod
    def empty(folder: str) -> None:
        """Empties a request's folder, for the pipeline to run again."""
        files.remove_dir(folder)
        files.make_private_dir(folder)

    def publish(self, merged: str, name: str) -> str:
        """Moves (local) or uploads (object stores) the finished local file `merged` into place as `name`;
        returns its published path."""
        destination = FileSystems.join(self.output, JOB_ID, name)
        if files.is_local(destination):
            files.publish(merged, destination, self.file_mode)
        else:
            self.store.upload(merged, destination)
        return destination
