"""Kafka: client settings for every client we make (client.py); Beam's cross-language KafkaIO (Java) for
unbounded reads (kafkaio.py); exact reads of offset ranges (ranges.py), acknowledged writes (produce.py)
and offset commits (commits.py) in Python (confluent-kafka). Every public name is importable from here.

Delivery, the same on every runner: KafkaIO never commits (on runners other than Flink it would commit
on read). The pipeline reports each record it is done with to `CommitOffsets`, which commits per
partition the offset below which every record is done: a contiguous watermark kept in Beam state.
A bounded read plans its offset ranges first (`plan_offset_ranges`) and reads exactly those
(`ReadOffsetRanges`): KafkaIO bounded by a record count shares the count evenly among partitions and
waits out its time limit on the short ones, and it cannot stop at an end offset.
"""
from programusers.io.kafka.client import COORDINATOR_WAIT_SECONDS as COORDINATOR_WAIT_SECONDS
from programusers.io.kafka.client import METRICS_NAMESPACE as METRICS_NAMESPACE
from programusers.io.kafka.client import REPORT_EVERY_SECONDS as REPORT_EVERY_SECONDS
from programusers.io.kafka.client import KafkaClientConfig, ask_the_group, read_properties
from programusers.io.kafka.commits import FOLD_OFFSETS as FOLD_OFFSETS
from programusers.io.kafka.commits import PROBE_SECONDS as PROBE_SECONDS
from programusers.io.kafka.commits import CommitOffsets, advance, merged, runs_of
from programusers.io.kafka.kafkaio import KafkaRecord, ReadLimit, ReadRecords, read_from_kafka
from programusers.io.kafka.produce import WriteAcknowledged
from programusers.io.kafka.ranges import FETCH_MESSAGES as FETCH_MESSAGES
from programusers.io.kafka.ranges import IDLE_LIMIT_SECONDS as IDLE_LIMIT_SECONDS
from programusers.io.kafka.ranges import OffsetRange, ReadOffsetRanges, plan_offset_ranges, share_records

__all__ = ["CommitOffsets", "KafkaClientConfig", "KafkaRecord", "OffsetRange", "ReadLimit", "ReadOffsetRanges",
           "ReadRecords", "WriteAcknowledged", "advance", "ask_the_group", "merged", "plan_offset_ranges",
           "read_from_kafka", "read_properties", "runs_of", "share_records"]
