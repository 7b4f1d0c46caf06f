"""A stack of its own: status, idempotent up, restart keeps topics and data, clear errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from streamrec.client import EventProducer, create_topics, topic_counts
from streamrec.config import Settings
from streamrec.errors import PortInUseError, StreamrecError
from streamrec.stack import Stack, free_port
from tests.conftest import IN_CI, ROOT
from tests.malformed import GOOD

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(tmp_path: Path) -> Stack:
    cache = Path(os.environ.get("STREAMREC_CACHE_DIR", ROOT / ".streamrec" / "cache"))
    ports = {
        "kafka_port": free_port(),
        "controller_port": free_port(),
        "redis_port": free_port(),
    }
    settings = Settings(home=tmp_path, cache_dir=cache, stack=ports)
    return Stack(settings)


def test_restart_keeps_topics_and_data(own_stack: Stack) -> None:
    try:
        statuses = own_stack.up()
    except StreamrecError as exc:
        if IN_CI:
            raise
        pytest.skip(str(exc))
    try:
        assert [s.state for s in statuses] == ["running", "running"]
        assert {s.name: s.version for s in statuses}["kafka"] == "4.1.1"
        pids = [s.pid for s in statuses]
        assert [s.pid for s in own_stack.up()] == pids, "up must be idempotent"

        settings = own_stack.settings.model_copy(
            update={
                "kafka": own_stack.settings.kafka.model_copy(
                    update={"bootstrap_servers": own_stack.kafka.address}
                )
            }
        )
        create_topics(settings)
        with EventProducer(settings) as producer:
            for i in range(100):
                producer.send({**GOOD, "event_id": f"p{i}"})
        redis.Redis.from_url(own_stack.redis.url).set("persist:me", "yes")

        assert own_stack.down() == ["redis", "kafka"]
        assert [s.state for s in own_stack.status()] == ["stopped", "stopped"]
        assert own_stack.down() == []

        own_stack.up()
        topics = AdminClient(settings.kafka.librdkafka()).list_topics(timeout=10).topics
        assert set(settings.topics.all()) <= set(topics)
        assert topic_counts(settings, [settings.topics.events])[settings.topics.events] == 100
        assert redis.Redis.from_url(own_stack.redis.url).get("persist:me") == b"yes"
    finally:
        own_stack.down()


def test_port_taken_is_a_clear_error(own_stack: Stack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", own_stack.settings.stack.redis_port))
        squatter.listen()
        own_stack.redis.process.run_dir.mkdir(parents=True, exist_ok=True)
        with pytest.raises(PortInUseError, match=str(own_stack.settings.stack.redis_port)):
            own_stack.redis.start()
