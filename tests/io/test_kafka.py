"""io/kafka/'s clients: properties given once (Java names) for KafkaIO and the Python clients, what the
transforms display (never a secret), and, on the local stack's Kafka, what the committer asks Kafka and
the watermark it commits. The offset arithmetic is in test_kafka_offsets.py."""
import time

import apache_beam as beam
import pytest
from apache_beam.transforms.display import DisplayData
from confluent_kafka import Consumer, Producer, TopicPartition
from ingest_cases import committed_offsets, create_topic, produce

from programusers import runners, settings
from programusers.io import kafka
from programusers.io.kafka import (
    CommitOffsets,
    KafkaClientConfig,
    KafkaRecord,
    OffsetRange,
    commits,
    ranges,
    read_properties,
)

SASL = ('security.protocol=SASL_SSL\n'
        '# a comment\n'
        'sasl.mechanism = SCRAM-SHA-512\n'
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n'
        '    username="reporter" password="s3cret=;x";\n'
        'ssl.truststore.type=PEM\n'
        'ssl.truststore.location=/etc/ca.pem\n')


def test_a_properties_file_is_read_as_java_reads_it(tmp_path):
    path = tmp_path / "kafka.properties"
    path.write_text(SASL)
    assert read_properties(str(path)) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                            'username="reporter" password="s3cret=;x";',
        "ssl.truststore.type": "PEM", "ssl.truststore.location": "/etc/ca.pem"}


def test_kafkaio_gets_the_properties_and_the_python_clients_their_librdkafka_names(tmp_path):
    path = tmp_path / "kafka.properties"
    path.write_text(SASL)
    client = KafkaClientConfig.load("k1:9093,k2:9093", str(path), ["client.id=programusers", "sasl.mechanism=PLAIN"])
    assert client.java(acks="all") == {
        "bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": read_properties(str(path))["sasl.jaas.config"], "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/ca.pem", "client.id": "programusers", "acks": "all"}
    assert client.python() == {
        "bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "reporter", "sasl.password": "s3cret=;x", "ssl.ca.location": "/etc/ca.pem",
        "client.id": "programusers"}
    assert "s3cret" not in client.describe() and client.describe() == "k1:9093,k2:9093 (SASL_SSL/PLAIN)"
    assert "s3cret" not in repr(client)  # a pickled config holds the file's path, not the secret


@pytest.mark.parametrize("overrides,message", [
    (["security.protocol"], "expected KEY=VALUE"),
    (["ssl.truststore.type=JKS", "ssl.truststore.location=/etc/ts.jks"], "read a PEM CA file"),
    (["sasl.jaas.config=com.example.KerberosLogin required;"], "username/password login"),
])
def test_properties_the_python_clients_cannot_use_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        KafkaClientConfig.load("k:9092", None, overrides).python()


def test_a_missing_properties_file_fails_at_once(tmp_path):
    with pytest.raises(OSError):
        KafkaClientConfig.load("k:9092", str(tmp_path / "missing.properties"))


def test_the_transforms_display_where_and_what_never_a_secret():
    client = KafkaClientConfig.load("k:9092", None, ['sasl.jaas.config=x required username="u" password="s3cret";'])
    transforms = [kafka.ReadOffsetRanges(client, [OffsetRange("t", 0, 0, 10)], split=5),
                  kafka.WriteAcknowledged(client, "t", max_outage=30.0),
                  CommitOffsets(client, "g", {("t", 0): 0}, streaming=True)]
    for transform in transforms:
        items = {item.key: item.value for item in DisplayData.create_from(transform).items}
        assert items["bootstrap"] == "k:9092" and "s3cret" not in str(items)
    assert {item.key: item.value for item in DisplayData.create_from(transforms[0]).items} == {
        "bootstrap": "k:9092", "records": 10, "partitions": 1, "deadline": "None", "split": 5}


@pytest.mark.services
def test_kafka_says_whether_offsets_hold_no_record(unique):
    topic = f"test.gap.{unique}"
    create_topic(topic, 1)
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "transactional.id": f"test-{unique}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for _ in range(5):  # offsets 0-4, the commit's marker at 5
        producer.produce(topic, value=b"v")
    producer.commit_transaction(30)
    # commit_transaction returns before its marker is appended (on a broker started moments ago, long
    # enough for a record produced next to take offset 5): wait for the marker, so the next record is at 6.
    watcher = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP, "group.id": f"check-{unique}"})
    deadline = time.monotonic() + 60
    while watcher.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] < 6:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    watcher.close()
    produce(topic, [(None, b"v")])  # offset 6
    offsets = commits._GroupOffsets(KafkaClientConfig(settings.KAFKA_BOOTSTRAP), f"test.gap.{unique}")
    try:
        assert offsets.is_gap(topic, 0, 5, 6)  # the marker holds no record
        assert not offsets.is_gap(topic, 0, 4, 6)  # a record at 4
        assert offsets.end_offset(topic, 0) == 7
    finally:
        offsets.close()


@pytest.mark.services
def test_the_committed_offset_stops_at_the_first_record_not_done(unique):
    topic, group = f"test.commit.{unique}.raw", f"test.commit.{unique}"
    create_topic(topic, 1)
    produce(topic, [(b"k", b"v")] * 10)
    client = KafkaClientConfig(settings.KAFKA_BOOTSTRAP)

    def commit(*done_offsets):
        """Each argument: the offsets of one PCollection of done records."""
        pipeline = beam.Pipeline(options=runners.pipeline_options("DirectRunner"))
        done = tuple(pipeline | f"Done{i}" >> beam.Create([KafkaRecord(topic, 0, offset, 0, None, b"v")
                                                          for offset in offsets])
                     for i, offsets in enumerate(done_offsets))
        _ = (done if len(done) > 1 else done[0]) | CommitOffsets(client, group, {(topic, 0): 0}, streaming=False)
        pipeline.run().wait_until_finish()
        return committed_offsets(topic, group)

    assert commit([0, 1, 2, 3, 5, 6, 7, 8, 9]) == [4]  # offset 4 holds a record, still on its way
    assert commit(range(4, 10)) == [10]  # a later run, from where the group stands
    # Done records in several PCollections (rows written, dead letters acknowledged) make one watermark.
    produce(topic, [(b"k", b"v")] * 4)
    assert commit([10, 12], [11]) == [13]


def test_kafka_record_from_kafkaio_metadata_row():
    row_ = beam.Row(topic="t", partition=1, offset=2, timestamp=3, key=None, value=b"v", headers=[],
                    timestampTypeId=0, timestampTypeName="CreateTime")
    assert KafkaRecord.from_row(row_) == KafkaRecord("t", 1, 2, 3, None, b"v")


class _Message:
    def __init__(self, offset: int):
        self._offset = offset

    def error(self):
        return None

    def offset(self):
        return self._offset

    def timestamp(self):
        return 0, 1_700_000_000_000

    def key(self):
        return None

    def value(self):
        return b"v"


class _PartitionConsumer:
    """One partition of `count` records, handed out as consume() asks; keeps how many each call asked for."""

    def __init__(self, count: int):
        self.count, self.asked, self.position = count, [], 0

    def assign(self, partitions):
        self.position = partitions[0].offset

    def unassign(self):
        pass

    def consume(self, num, timeout):
        self.asked.append(num)
        taken = [_Message(offset) for offset in range(self.position, min(self.position + num, self.count))]
        self.position += len(taken)
        return taken


def test_a_range_is_read_asking_kafka_for_no_more_than_it_still_holds():
    # consume() waits out its timeout for a count it cannot reach: asking past the range's end cost a
    # second a range.
    read = ranges._ReadRangeFn(KafkaClientConfig("k:9092"), deadline=None)
    read._consumer = consumer = _PartitionConsumer(5000)
    records = list(read.process(OffsetRange("t", 0, 0, 2500)))
    assert [r.offset for r in records] == list(range(2500))
    assert consumer.asked == [ranges.FETCH_MESSAGES, ranges.FETCH_MESSAGES, 2500 - 2 * ranges.FETCH_MESSAGES]
