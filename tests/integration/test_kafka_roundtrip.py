"""Produce 10,000 events with the SDK; read every one back with aiokafka and confluent-kafka."""

from __future__ import annotations

import json
import time

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer

from streamrec.client import EventProducer
from streamrec.config import Settings

pytestmark = pytest.mark.integration
N = 10_000


def _events(n: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"e{i}",
            "user_id": f"u{i % 97}",
            "session_id": f"s{i % 211}",
            "item_id": f"i{i % 1000}",
            "type": ("view", "click", "add_to_cart", "purchase")[i % 4],
            "timestamp": 1_700_000_000 + i,
        }
        for i in range(n)
    ]


@pytest.fixture
def produced(stack_settings: Settings) -> Settings:
    with EventProducer(stack_settings) as producer:
        for payload in _events(N):
            producer.send(payload)
    assert producer.stats.delivered == N
    assert producer.stats.failed == 0
    return stack_settings


def test_confluent_consumer_reads_all_and_sessions_stay_ordered(produced: Settings) -> None:
    consumer = Consumer(
        {
            **produced.kafka.librdkafka(),
            "group.id": "confluent-check",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([produced.topics.events])
    seen: dict[str, int] = {}
    partition_of_session: dict[str, int] = {}
    last_in_session: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while len(seen) < N and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                assert msg.error() is None
                payload = json.loads(msg.value())
                seen[payload["event_id"]] = seen.get(payload["event_id"], 0) + 1
                session = payload["session_id"]
                assert msg.key() == session.encode()
                assert partition_of_session.setdefault(session, msg.partition()) == msg.partition()
                order = int(payload["event_id"][1:])
                assert order > last_in_session.get(session, -1), "session order broken"
                last_in_session[session] = order
    finally:
        consumer.close()
    assert len(seen) == N
    assert set(seen.values()) == {1}


async def test_aiokafka_consumer_reads_all(produced: Settings) -> None:
    consumer = AIOKafkaConsumer(
        produced.topics.events,
        group_id="aiokafka-check",
        auto_offset_reset="earliest",
        **produced.kafka.aiokafka(),
    )
    await consumer.start()
    ids: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while len(ids) < N and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batches.values():
                ids.update(json.loads(record.value)["event_id"] for record in records)
    finally:
        await consumer.stop()
    assert ids == {f"e{i}" for i in range(N)}
