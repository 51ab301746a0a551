"""Offset commits, the same on every runner: the pipeline reports each record it is done with to
`CommitOffsets`, which commits per partition the offset below which every record is done, a contiguous
watermark kept in Beam state. The watermark arithmetic (`advance`, `merged`, `runs_of`) is pure."""
from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.coders import FloatCoder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from programusers.io.kafka.client import (
    METRICS_NAMESPACE,
    REPORT_EVERY_SECONDS,
    KafkaClientConfig,
    _consumer,
    _start_at,
    ask_the_group,
)

FOLD_OFFSETS = 100_000  # a partition's done offsets kept one by one, at most, before they are folded into runs
PROBE_SECONDS = 10.0  # how long Kafka is asked whether offsets hold a record before the answer is no
_LOG = logging.getLogger(__name__)

__all__ = ["CommitOffsets", "advance", "merged", "runs_of"]


Run = tuple[int, int]  # offsets [start, end) of one partition, all done


def advance(position: int, runs: Iterable[Run], is_gap: Callable[[int, int], bool] | None = None
            ) -> tuple[int, list[Run]]:
    """The watermark moved over the done `runs` that touch it: (new position, the runs still beyond it).
    Where a run starts past the position, `is_gap(position, run_start)` may say that no record lies
    between (offsets a compaction or a transaction marker took): the watermark then moves on. Pure."""
    pending = sorted(r for r in runs if r[1] > r[0])
    index = 0
    while index < len(pending):
        start, end = pending[index]
        if start > position and not (is_gap and is_gap(position, start)):
            break
        position, index = max(position, end), index + 1
    return position, merged(pending[index:])


def merged(runs: Iterable[Run]) -> list[Run]:
    """Runs in order, those touching or overlapping (bundles retried, split) made one. Pure."""
    joined: list[Run] = []
    for start, end in sorted(r for r in runs if r[1] > r[0]):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def runs_of(offsets: Iterable[int]) -> list[Run]:
    """Offsets as the fewest [start, end) runs. Pure."""
    runs: list[list[int]] = []
    for offset in sorted(set(offsets)):
        if runs and runs[-1][1] == offset:
            runs[-1][1] += 1
        else:
            runs.append([offset, offset + 1])
    return [(start, end) for start, end in runs]


class _RunsFn(beam.DoFn):
    """Done records -> ((topic, partition), run) per bundle: a bundle's offsets mostly run on. A partition's
    offsets are folded into runs every FOLD_OFFSETS, so a bundle of millions of records (the in-process runner
    reads a whole backfill in one) holds its runs, not its offsets."""

    def start_bundle(self):
        self._offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._runs: dict[tuple[str, int], list[Run]] = defaultdict(list)

    def process(self, record):
        key = (record.topic, record.partition)
        offsets = self._offsets[key]
        offsets.append(record.offset)
        if len(offsets) >= FOLD_OFFSETS:
            self._fold(key)

    def _fold(self, key: tuple[str, int]) -> None:
        self._runs[key] = merged([*self._runs[key], *runs_of(self._offsets.pop(key))])

    def finish_bundle(self):
        for key in list(self._offsets):
            self._fold(key)
        for key, runs in self._runs.items():
            for run in runs:
                yield GlobalWindows.windowed_value((key, run))


class _GroupOffsets:
    """What the committer asks Kafka, through one consumer of `group_id`: a plain object _CommitFn owns
    (made in setup, closed in teardown)."""

    def __init__(self, client: KafkaClientConfig, group_id: str):
        self._consumer = _consumer(client, group_id)

    def where_the_group_stands(self, topic: str, partition: int) -> int:
        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        [found] = ask_the_group(self._consumer.committed, [TopicPartition(topic, partition)], timeout=30)
        return _start_at(found.offset, low, high)

    def commit(self, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        ask_the_group(self._consumer.commit, offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)

    def is_gap(self, topic: str, partition: int, position: int, until: int) -> bool:
        """Whether the first record at or after `position` lies at `until` or later; no when Kafka cannot say."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        try:
            self._consumer.assign([TopicPartition(topic, partition, position)])
        except KafkaException:
            return False
        try:
            deadline = time.monotonic() + PROBE_SECONDS
            while time.monotonic() < deadline:
                message = self._consumer.poll(1.0)
                if message is None:
                    continue
                if not message.error() or message.error().code() == KafkaError._PARTITION_EOF:
                    return message.offset() >= until
            return False
        finally:
            self._consumer.unassign()

    def end_offset(self, topic: str, partition: int) -> int:
        from confluent_kafka import TopicPartition

        return self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]

    def close(self) -> None:
        self._consumer.close()


class _CommitFn(beam.DoFn):
    """Keyed by (topic, partition): the watermark of done records, committed to the group. Streaming, a
    processing-time timer flushes every `every` seconds and reports the lag once a minute; bounded,
    one flush at the end of the input."""
    POSITION = ReadModifyWriteStateSpec("position", VarIntCoder())
    COMMITTED = ReadModifyWriteStateSpec("committed", VarIntCoder())
    REPORTED = ReadModifyWriteStateSpec("reported", FloatCoder())
    RUNS = BagStateSpec("runs", TupleCoder((VarIntCoder(), VarIntCoder())))
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)
    FINAL = TimerSpec("final", TimeDomain.WATERMARK)

    def __init__(self, client: KafkaClientConfig, group_id: str, starts: dict[tuple[str, int], int], *,
                 every: float, streaming: bool):
        self._client, self._group_id, self._starts = client, group_id, starts
        self._every, self._streaming = every, streaming

    def setup(self):
        self._offsets = _GroupOffsets(self._client, self._group_id)
        self._commits = Metrics.counter(METRICS_NAMESPACE, "offset_commits")

    def process(self, element, runs=beam.DoFn.StateParam(RUNS), flush=beam.DoFn.TimerParam(FLUSH),
                final=beam.DoFn.TimerParam(FINAL)):
        _, run = element
        runs.add(run)
        if self._streaming:  # aligned, so that setting it again for every element does not push it back
            flush.set(Timestamp((time.time() // self._every + 1) * self._every))
        else:
            final.set(GlobalWindow().max_timestamp())

    @on_timer(FLUSH)
    def flush(self, key=beam.DoFn.KeyParam, position=beam.DoFn.StateParam(POSITION),
              committed=beam.DoFn.StateParam(COMMITTED), runs=beam.DoFn.StateParam(RUNS),
              reported=beam.DoFn.StateParam(REPORTED), flush=beam.DoFn.TimerParam(FLUSH)):
        self._flush(key, position, committed, runs, final=False)
        if time.time() - (reported.read() or 0.0) >= REPORT_EVERY_SECONDS:
            reported.write(time.time())
            self._report_lag(key, committed.read())
        flush.set(Timestamp((time.time() // self._every + 1) * self._every))  # on, to report the lag

    @on_timer(FINAL)
    def final(self, key=beam.DoFn.KeyParam, position=beam.DoFn.StateParam(POSITION),
              committed=beam.DoFn.StateParam(COMMITTED), runs=beam.DoFn.StateParam(RUNS)):
        self._flush(key, position, committed, runs, final=True)

    def _flush(self, key, position_state, committed_state, runs_state, *, final: bool):
        from confluent_kafka import KafkaException

        topic, partition = key
        before = position_state.read()
        if before is None:  # where reading started, or where the group stands now if another run moved it on
            before = max(self._starts.get(key, -1), self._offsets.where_the_group_stands(topic, partition))
        runs = list(runs_state.read())
        position, left = advance(before, runs)
        if left and (final or position == before):  # stuck: maybe on offsets that hold no record
            position, left = advance(position, left, functools.partial(self._offsets.is_gap, topic, partition))
        runs_state.clear()
        for run in left:
            runs_state.add(run)
        position_state.write(position)
        committed = committed_state.read()
        if position != committed:
            try:
                self._offsets.commit(topic, partition, position)
            except KafkaException as error:
                if final or not error.args[0].retriable():  # no later flush, or none would help
                    raise RuntimeError(f"committing {topic}[{partition}] at {position} failed: "
                                       f"{error.args[0].name()}") from None
                _LOG.warning("committing %s[%d]: %s; trying again at the next flush", topic, partition,
                             error.args[0].name())
                return
            committed = position
            self._commits.inc()
        committed_state.write(committed)

    def _report_lag(self, key, committed: int | None) -> None:
        from confluent_kafka import KafkaException

        topic, partition = key
        try:
            end = self._offsets.end_offset(topic, partition)
        except KafkaException as error:  # a report is worth no failed bundle: the next one will tell
            _LOG.warning("Kafka lag of %s[%d]: %s", topic, partition, error.args[0].name())
            return
        committed = max(committed or 0, 0)  # none yet: nothing committed
        Metrics.gauge(METRICS_NAMESPACE, f"{topic}[{partition}].records_behind").set(end - committed)
        Metrics.gauge(METRICS_NAMESPACE, f"{topic}[{partition}].committed_offset").set(committed)
        _LOG.info("Kafka lag: %s[%d] %d record(s) behind the end offset %d (committed %d)", topic, partition,
                  end - committed, end, committed)

    def teardown(self):
        self._offsets.close()


class CommitOffsets(beam.PTransform):
    """Commits to `group_id`, per partition, the offset below which every record has come in: a
    contiguous watermark, so a record still on its way holds back every later one of its partition.
    Offsets that hold no record (compacted away, transaction markers) do not hold it: Kafka is asked.

    Input: the `KafkaRecord`s (or anything with topic, partition and offset) the pipeline is done with,
    in any order: a PCollection, or a tuple of them.

    Args:
      client: the brokers and client properties.
      group_id: the consumer group to commit to.
      starts: where the reading of each (topic, partition) started (a partition not named: where the
        group stands); each is committed at the first flush.
      streaming: commit the watermark every `every` seconds and log each partition's lag once a minute
        (also gauges `<topic>[<p>].records_behind`); else once, at the end of the input.
      every: seconds between commits when streaming.
    """

    def __init__(self, client: KafkaClientConfig, group_id: str, starts: dict[tuple[str, int], int], *,
                 streaming: bool, every: float = 5.0):
        super().__init__()
        if every <= 0:
            raise ValueError("every must be positive")
        self._fn = _CommitFn(client, group_id, dict(starts), every=every, streaming=streaming)
        self._client, self._starts, self._group_id, self._every = client, dict(starts), group_id, every
        self._streaming = streaming

    def expand(self, done):
        # The runs of each input are taken where its records are made, so only a bundle's few runs go on to
        # the committer's stage, never the records (a runner's Flatten may hand every element over).
        branches = done if isinstance(done, tuple) else (done,)
        # Every planned partition gets a key, so its lag is reported even when it receives nothing.
        planned = branches[0].pipeline | "Partitions" >> beam.Create([(key, (start, start))
                                                                      for key, start in sorted(self._starts.items())])
        runs = [branch | f"AsRuns{index or ''}" >> beam.ParDo(_RunsFn()) for index, branch in enumerate(branches)]
        keyed_runs = tuple[tuple[str, int], tuple[int, int]]  # a deterministic key coder for the state
        return ((planned, *runs)
                | "Merge" >> beam.Flatten().with_output_types(keyed_runs)
                | "Commit" >> beam.ParDo(self._fn).with_input_types(keyed_runs))

    def display_data(self):
        return {"bootstrap": self._client.bootstrap, "group_id": self._group_id, "partitions": len(self._starts),
                "streaming": self._streaming, "every_seconds": self._every}
