"""The faust worker against the real stack: state, idempotency, recommendations, rewards,
dead letters, and two workers sharing one consumer group."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaException

from streamrec.client import EventProducer
from streamrec.config import Settings
from streamrec.deadletter import parse_headers
from streamrec.events import Recommendation, Reward
from streamrec.stack import free_port
from streamrec.state.keys import Keys
from tests.helpers import drain, metric_value, redis_snapshot, wait_for, worker_process
from tests.malformed import GOOD, MALFORMED

pytestmark = pytest.mark.integration

TYPES = ["view", "view", "click", "add_to_cart", "purchase"]


def _stream(n_users: int = 25, per_user: int = 16, seed: int = 7) -> list[dict[str, Any]]:
    """One session per user, interleaved across users in time order."""
    rng = random.Random(seed)
    events = []
    for user in range(n_users):
        items = rng.sample(range(300), per_user)
        for step, item in enumerate(items):
            events.append(
                {
                    "event_id": f"ev-{user}-{step}",
                    "user_id": f"user{user}",
                    "session_id": f"sess{user}",
                    "item_id": f"item{item}",
                    "type": rng.choice(TYPES),
                    "timestamp": 1_700_000_000 + step * 30 + user,
                    "context": {"device": rng.choice(["mobile", "desktop"])},
                }
            )
    events.sort(key=lambda e: e["timestamp"])
    return events


def _send(settings: Settings, events: list[dict[str, Any]]) -> None:
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)


def _dedup_count(client: redis.Redis, keys: Keys) -> int:
    return sum(1 for _ in client.scan_iter(keys.event("*"), count=1000))


def test_state_reflects_events_exactly_once_and_replay_changes_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    events = _stream()
    port = free_port()
    with worker_process(settings, tmp_path / "worker.log", metrics_port=port) as proc:
        _send(settings, events)
        wait_for(lambda: _dedup_count(client, keys) == len(events), timeout=90)
        wait_for(lambda: metric_value(port, "streamrec_events_consumed_total") >= len(events))

        by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_user[event["user_id"]].append(event)
        for user, mine in by_user.items():
            counters = {
                k.decode(): int(v) for k, v in client.hgetall(keys.user_counters(user)).items()
            }
            expected = Counter(e["type"] for e in mine)
            assert counters.pop("events") == len(mine)
            assert counters == dict(expected)
            history = [e.decode() for e in client.lrange(keys.user_history(user), 0, -1)]
            assert history == [e["item_id"] for e in reversed(mine)]
            session = client.lrange(keys.session(mine[0]["session_id"]), 0, -1)
            assert [e.decode().split("\t")[0] for e in session] == history[
                : settings.redis.session_len
            ]
            assert (
                0 < client.ttl(keys.session(mine[0]["session_id"])) <= settings.redis.session_ttl_s
            )
        # Every batch's outputs delivered and confirmed (marker "d"), else a replay re-emits.
        wait_for(lambda: all(client.get(k) == b"d" for k in client.scan_iter(keys.event("*"))))
        before = redis_snapshot(client, keys.all_pattern())

        _send(settings, events)  # redelivery of every event
        wait_for(
            lambda: metric_value(port, "streamrec_events_duplicate_total") >= len(events),
            timeout=90,
        )
        assert redis_snapshot(client, keys.all_pattern()) == before
        assert proc.poll() is None


def test_recommendations_for_every_qualifying_event_exclude_seen_and_rewards_follow(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings
    events = _stream(n_users=10, per_user=12, seed=3)
    qualifying = [e for e in events if e["type"] in settings.stream.recommend_on]
    with worker_process(settings, tmp_path / "worker.log"):
        _send(settings, events)
        messages = drain(settings, settings.topics.recommendations, len(qualifying), timeout=90)
        recs = [Recommendation.model_validate_json(m.value()) for m in messages]
        assert sorted(r.event_id or "" for r in recs) == sorted(e["event_id"] for e in qualifying)

        seen_so_far: dict[str, set[str]] = defaultdict(set)
        seen_at: dict[str, set[str]] = {}
        for event in events:
            seen_so_far[event["user_id"]].add(event["item_id"])
            seen_at[event["event_id"]] = set(seen_so_far[event["user_id"]])
        for rec in recs:
            shown = [item.item_id for item in rec.items]
            assert len(shown) == len(set(shown))
            assert not set(shown) & seen_at[rec.event_id or ""], "a seen item was recommended"
            assert rec.model_version and rec.policy
            assert [item.position for item in rec.items] == list(range(len(rec.items)))
        assert sum(len(r.items) == settings.stream.top_k for r in recs) > len(recs) // 2

        # A click on a recommended item, inside the window, yields a reward record.
        last = max(recs, key=lambda r: r.event_time or 0)
        target = last.items[2]
        assert last.event_time is not None
        click = {
            "event_id": "reward-click",
            "user_id": last.user_id,
            "session_id": last.session_id,
            "item_id": target.item_id,
            "type": "purchase",
            "timestamp": last.event_time.timestamp() + 60,
        }
        _send(settings, [click])
        rewards = [
            Reward.model_validate_json(m.value())
            for m in drain(settings, settings.topics.rewards, 10**6, timeout=15)
        ]
        mine = [r for r in rewards if r.event_id == "reward-click"]
        assert len(mine) == 1
        assert (mine[0].rec_id, mine[0].position, mine[0].item_id) == (
            last.rec_id,
            2,
            target.item_id,
        )
        assert mine[0].reward == settings.stream.reward_values["purchase"]
        assert mine[0].delay_s == pytest.approx(60)


def test_malformed_events_are_dead_lettered_and_the_worker_keeps_going(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    with worker_process(settings, tmp_path / "worker.log") as proc:
        with EventProducer(settings) as producer:
            for index, (name, raw, _) in enumerate(MALFORMED):
                producer.send({**GOOD, "event_id": f"ok-{index}", "session_id": f"s{index}"})
                producer.send_raw(raw, key=name.encode())
                # Right behind the bad record on its partition: must not be held up by it.
                behind = {**GOOD, "event_id": f"behind-{index}", "session_id": name}
                producer.send_raw(json.dumps(behind).encode(), key=name.encode())
        letters = drain(settings, settings.topics.dead_letters, len(MALFORMED), timeout=90)
        wait_for(lambda: _dedup_count(client, keys) == 2 * len(MALFORMED))
        assert proc.poll() is None, "worker died"
    reasons = {m.key().decode(): parse_headers(m.headers())["reason"] for m in letters}
    assert reasons == {name: reason for name, _, reason in MALFORMED}
    assert all(parse_headers(m.headers())["consumer"] == settings.stream.app_id for m in letters)


def test_a_record_near_the_broker_limit_in_key_and_headers_is_dead_lettered_and_passed(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """Any client may send a record the broker takes (~1 MiB) whose key and headers are big:
    its letter must still fit the worker's producer, or the worker stops on it at every start."""
    from confluent_kafka import Producer

    settings = stack_settings
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    producer = Producer({**settings.kafka.librdkafka(), "message.max.bytes": 2_000_000})
    headers = [(f"h{n}", b"x" * 2_000) for n in range(40)]  # 80 kB
    producer.produce(
        settings.topics.events,
        value=b"v" * 460_000,  # not JSON: a letter
        key=b"k" * 480_000,
        headers=headers,
        partition=0,
    )
    behind = {**GOOD, "event_id": "behind-the-big-one"}
    producer.produce(settings.topics.events, value=json.dumps(behind).encode(), partition=0)
    assert producer.flush(30) == 0
    with worker_process(settings, tmp_path / "worker.log") as proc:
        letters = drain(settings, settings.topics.dead_letters, 1, timeout=90)
        wait_for(lambda: _dedup_count(client, keys) == 1, timeout=90)
        assert proc.poll() is None, "worker died"
    (letter,) = letters
    meta = parse_headers(letter.headers())
    assert meta["reason"] == "oversize", meta
    assert meta["key_bytes"] == "480000" and len(letter.key()) == 64 * 1024
    kept = [name for name, _ in letter.headers() if not name.startswith("streamrec.dlq.")]
    assert kept == [f"h{n}" for n in range(len(kept))]
    assert int(meta["headers_cut"]) == 40 - len(kept) > 0
    assert len(letter) < 1_000_000


def test_two_workers_share_the_partitions_and_apply_every_event_once(
    stack_settings: Settings, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient

    settings = stack_settings
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    events = _stream(n_users=60, per_user=10, seed=11)
    ports = [free_port(), free_port()]
    admin = AdminClient(settings.kafka.librdkafka())

    def members() -> int:
        group = admin.describe_consumer_groups([settings.stream.app_id])[settings.stream.app_id]
        try:
            description = group.result(10)
        except KafkaException:  # the group coordinator is still loading
            return 0
        assigned = [m for m in description.members if m.assignment.topic_partitions]
        return len(assigned) if str(description.state).endswith("STABLE") else 0

    with (
        worker_process(settings, tmp_path / "w1.log", metrics_port=ports[0]),
        worker_process(settings, tmp_path / "w2.log", metrics_port=ports[1]),
    ):
        wait_for(lambda: members() == 2, timeout=90, interval=1)
        _send(settings, events)
        wait_for(lambda: _dedup_count(client, keys) == len(events), timeout=90)
        consumed = [metric_value(p, "streamrec_events_consumed_total") for p in ports]
        duplicates = [metric_value(p, "streamrec_events_duplicate_total") for p in ports]
    assert all(count > 0 for count in consumed), f"one worker got nothing: {consumed}"
    assert sum(consumed) - sum(duplicates) == len(events)
    total = sum(int(client.hget(keys.user_counters(f"user{u}"), "events") or 0) for u in range(60))
    assert total == len(events)
    assert json.dumps(consumed)


def test_a_click_in_the_batch_after_its_view_is_attributed_while_batches_overlap(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """One event per batch, sent in a burst, so batches queue up and overlap in the worker;
    with the popular list read from Redis on every batch, a batch's state work yields in the
    middle. Each session's view, then a click on the item its recommendation put first:
    every click must find the page its view showed (state work stays in batch order)."""
    settings = stack_settings
    t0 = 1_700_000_000 + 600
    warm = [
        {
            "event_id": f"warm-{item}-{n}",
            "user_id": "warm",
            "session_id": "warm",
            "item_id": f"hot-{item}",
            "type": "click",
            "timestamp": t0 - 300,
        }
        for item in range(5)
        for n in range(10 - item)  # hot-0 is the most popular item by far
    ]
    burst = []
    for s in range(40):
        common = {"user_id": f"pu{s}", "session_id": f"ps{s}"}
        burst.append(
            {**common, "event_id": f"pv{s}", "item_id": f"x{s}", "type": "view", "timestamp": t0}
        )
        burst.append(
            {
                **common,
                "event_id": f"pc{s}",
                "item_id": "hot-0",
                "type": "click",
                "timestamp": t0 + 5,
            }
        )
    with worker_process(
        settings,
        tmp_path / "worker.log",
        STREAMREC_STREAM__BATCH_SIZE="1",
        STREAMREC_STREAM__POPULAR_REFRESH_S="0",
    ):
        _send(settings, warm)
        drain(settings, settings.topics.recommendations, len(warm), timeout=90)
        _send(settings, burst)
        messages = drain(settings, settings.topics.recommendations, len(warm) + 80, timeout=90)
        recs = {
            rec.event_id: rec
            for rec in (Recommendation.model_validate_json(m.value()) for m in messages)
        }
        rewards = [
            Reward.model_validate_json(m.value())
            for m in drain(settings, settings.topics.rewards, 40, timeout=30)
        ]
    views = {f"pc{s}": recs[f"pv{s}"] for s in range(40)}
    assert all(view.items[0].item_id == "hot-0" for view in views.values())
    by_click = {reward.event_id: reward for reward in rewards}
    missing = sorted(set(views) - set(by_click))
    assert not missing, f"{len(missing)} clicks not attributed to their view's page: {missing}"
    for click, view in views.items():
        assert (by_click[click].rec_id, by_click[click].position) == (view.rec_id, 0)
