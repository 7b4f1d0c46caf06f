from __future__ import annotations

import pytest
import redis

from tests.conftest import LiveStack

pytestmark = pytest.mark.integration


def test_redis_round_trip_with_aof_on(live_stack: LiveStack) -> None:
    client = redis.Redis.from_url(live_stack.redis_url)
    if live_stack.stack is not None:
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    client.hset("aof-test:h", mapping={"a": "1", "b": "two"})
    client.expire("aof-test:h", 60)
    assert client.hgetall("aof-test:h") == {b"a": b"1", b"b": b"two"}
    assert 0 < client.ttl("aof-test:h") <= 60
    info = client.info("persistence")
    if live_stack.stack is not None:
        assert info["aof_enabled"] == 1
