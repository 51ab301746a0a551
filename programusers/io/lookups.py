"""Batched lookups in the shape of Beam's Enrichment handlers (apache_beam.transforms.enrichment, which
needs the GCP extras): a handler is a context manager, its client opened on enter and let go on exit,
called with a batch of keys and answering with what it found for them. One DoFn owns a handler: `LookUp`
runs one on batches of keys; a DoFn that joins several lookups opens its handlers in setup() the same way.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol, Self

import apache_beam as beam

__all__ = ["LookUp", "LookupHandler"]


class LookupHandler(Protocol):
    """What a lookup handler provides (io/cassandra.CassandraLookupHandler, io/redis.RedisHashHandler)."""

    def __enter__(self) -> Self:
        """Opens or acquires the handler's client (in a DoFn's setup)."""

    def __exit__(self, *exc_info) -> None:
        """Lets the client go (in a DoFn's teardown)."""

    def __call__(self, keys: list) -> dict[Hashable, Any]:
        """The batch's keys that were found, each with what was found."""


class _LookUpFn(beam.DoFn):
    def __init__(self, handler: LookupHandler):
        self._handler = handler

    def setup(self):
        self._handler.__enter__()

    def process(self, keys: list):
        yield from self._handler(keys).items()

    def teardown(self):
        self._handler.__exit__(None, None, None)


class LookUp(beam.PTransform):
    """keys -> (key, what `handler` found) for the keys it found, `batch_size` keys a call.

    Args:
      handler: a LookupHandler; each DoFn instance gets its own copy (pickled with it).
      batch_size: keys per call of the handler (one round of requests).
    """

    def __init__(self, handler: LookupHandler, batch_size: int = 500):
        super().__init__()
        self._handler, self._batch_size = handler, batch_size

    def expand(self, keys):
        return (keys
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "LookUp" >> beam.ParDo(_LookUpFn(self._handler)))

    def display_data(self):
        return {"handler": type(self._handler).__name__, "batch_size": self._batch_size}
