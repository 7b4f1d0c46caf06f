"""Producers compress: Java clients and Kafka Connect often default to lz4, snappy or zstd.
The worker (faust over aiokafka) must read every codec Kafka has, not only gzip."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from streamrec.client import EventProducer
from streamrec.config import Settings
from streamrec.events import Recommendation
from streamrec.state.keys import Keys
from tests.helpers import drain, wait_for, worker_process

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")


def test_the_worker_reads_events_in_every_compression_codec(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings
    per_codec = 40
    sent: dict[str, str] = {}  # event id -> codec
    for codec in CODECS:
        config = {"compression.type": codec, "linger.ms": 50}  # batches, so compression applies
        with EventProducer(settings, config=config) as producer:
            for n in range(per_codec):
                event_id = f"{codec}-{n}"
                producer.send(
                    {
                        "event_id": event_id,
                        "user_id": f"{codec}-user{n % 4}",
                        "session_id": f"{codec}-sess{n % 4}",
                        # a long, repetitive item id: the codecs really compress the batch
                        "item_id": f"item-{n % 7}-" + "x" * 200,
                        "type": "view",
                        "timestamp": 1_700_000_000 + n,
                    }
                )
                sent[event_id] = codec
        assert producer.stats.delivered == per_codec and producer.stats.failed == 0
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    with worker_process(settings, tmp_path / "worker.log"):
        recs = drain(settings, settings.topics.recommendations, len(sent), timeout=120)
        answered = {Recommendation.model_validate_json(m.value()).event_id for m in recs}
        assert answered == set(sent), sorted(set(sent) - answered)[:5]
        wait_for(lambda: all(client.exists(keys.event(event_id)) for event_id in sent))
    assert drain(settings, settings.topics.dead_letters, 1, timeout=3) == []
