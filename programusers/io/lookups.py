"""Batched lookups in the shape of Beam's Enrichment handlers (apache_beam.transforms.enrichment, which
needs the GCP extras): a handler is a context manager, its client opened on enter and let go on exit,
called with a batch of keys and answering with what it found for them. One DoFn owns its handlers: it
enters them in setup() and exits them in teardown() (the report's row builder owns two).
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol, Self

__all__ = ["LookupHandler"]


class LookupHandler(Protocol):
    """What a lookup handler provides (io/cassandra.CassandraLookupHandler, io/redis.RedisHashHandler)."""

    def __enter__(self) -> Self:
        """Opens or acquires the handler's client (in a DoFn's setup)."""

    def __exit__(self, *exc_info) -> None:
        """Lets the client go (in a DoFn's teardown)."""

    def __call__(self, keys: list) -> dict[Hashable, Any]:
        """The batch's keys that were found, each with what was found."""

    def count_throttled(self) -> None:
        """Adds the time its client waited to retry since the last call to a throttled-time counter; the
        owning DoFn calls it on its bundle's thread, where Beam counters count (calls may run on another)."""
