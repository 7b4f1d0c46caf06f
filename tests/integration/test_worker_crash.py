"""A worker killed (SIGKILL) mid-stream loses nothing: inputs are acked only after their outputs
are delivered, so after a restart every valid event is reflected exactly once in state and every
qualifying event has a recommendation on the topic (possibly twice: at-least-once output)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from streamrec.client import EventProducer
from streamrec.config import Settings
from streamrec.events import Recommendation
from streamrec.state.keys import Keys
from tests.helpers import drain, wait_for, worker_process

pytestmark = pytest.mark.integration

N_USERS, PER_USER = 100, 60


def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings.model_copy(
        update={
            "stream": stack_settings.stream.model_copy(
                update={"batch_size": 64, "max_inflight_batches": 4}
            )
        }
    )
    events = [
        {
            "event_id": f"crash-{user}-{step}",
            "user_id": f"cu{user}",
            "session_id": f"cs{user}",
            "item_id": f"ci{(user * 31 + step * 7) % 500}",
            "type": "view" if step % 3 else "click",
            "timestamp": 1_700_000_000 + step * 60 + user,
        }
        for step in range(PER_USER)
        for user in range(N_USERS)
    ]
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
    with worker_process(settings, tmp_path / "first.log") as proc:
        wait_for(lambda: client.dbsize() > 0 and _applied(client, keys) >= 600, timeout=90)
        proc.kill()  # no shutdown, no commit: whatever was in flight is redelivered
        proc.wait(10)
    partial = _applied(client, keys)
    assert partial < len(events), "the worker finished before it was killed; grow the stream"
    with worker_process(settings, tmp_path / "second.log"):
        wait_for(lambda: _applied(client, keys) == len(events), timeout=120)
        qualifying = {e["event_id"] for e in events if e["type"] in settings.stream.recommend_on}
        got: set[str | None] = set()

        def covered() -> bool:  # outputs are at-least-once: count distinct triggering events
            messages = drain(settings, settings.topics.recommendations, 10**9, timeout=3)
            got.update(Recommendation.model_validate_json(m.value()).event_id for m in messages)
            return qualifying <= got

        deadline = time.monotonic() + 90
        while not covered() and time.monotonic() < deadline:
            time.sleep(1)
        assert qualifying <= got, f"{len(qualifying - got)} recommendations lost"
    for user in range(N_USERS):
        counters = client.hgetall(keys.user_counters(f"cu{user}"))
        assert int(counters[b"events"]) == PER_USER  # each event applied exactly once
        assert client.llen(keys.user_history(f"cu{user}")) == min(
            PER_USER, settings.redis.user_history_len
        )


def _applied(client: redis.Redis, keys: Keys) -> int:
    return sum(1 for _ in client.scan_iter(keys.event("*"), count=2000))
