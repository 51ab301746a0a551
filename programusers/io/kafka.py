"""Kafka through Beam's cross-language KafkaIO (Java), expanded by a Java expansion service."""
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka


def read_from_kafka(bootstrap: str, topics: list[str], expansion_service: str, *, group_id: str | None = None,
                    max_records: int | None = None, max_read_time: int | None = None,
                    commit_offsets: bool = False, with_metadata: bool = False) -> ReadFromKafka:
    """Reads (key, value) byte pairs, or rows with topic/partition/offset when `with_metadata`.

    `max_records`/`max_read_time` (seconds) make the read bounded (backfills, tests). Offsets are
    committed by Beam only after the records' bundle is finalized (`commit_offsets`), never by the
    Kafka client's auto-commit.
    """
    config = {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest", "enable.auto.commit": "false"}
    if group_id:
        config["group.id"] = group_id
    return ReadFromKafka(consumer_config=config, topics=topics, max_num_records=max_records,
                         max_read_time=max_read_time, commit_offset_in_finalize=commit_offsets,
                         with_metadata=with_metadata, expansion_service=expansion_service)


def write_to_kafka(bootstrap: str, topic: str, expansion_service: str) -> WriteToKafka:
    """Writes (key, value) byte pairs; acks=all so a dead letter is durable once written."""
    return WriteToKafka(producer_config={"bootstrap.servers": bootstrap, "acks": "all"}, topic=topic,
                        expansion_service=expansion_service)
