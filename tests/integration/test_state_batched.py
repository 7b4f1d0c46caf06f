"""A micro-batch applied in one script call leaves Redis exactly as the same events applied one
call each: the script gathers list pushes, counters, set members and TTLs per key and writes
them once at the end of the batch, and nothing may tell the two apart."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest
import redis

from streamrec.events import parse_event
from streamrec.state.keys import Keys
from streamrec.state.store import StateStore

pytestmark = pytest.mark.integration

AT = 1_700_000_000.0


def _events(seed: int) -> list[object]:
    """Bursts of a few users over a few sessions, with event types mixed, a device on some,
    and repeated items: longer than the bounded lists, so trimming matters."""
    rng = random.Random(seed)
    events = []
    for n in range(90):
        user = rng.choice(["u1", "u2", "u3"])
        payload: dict[str, object] = {
            "event_id": f"e{n}",
            "user_id": user,
            "session_id": f"{user}-s{rng.randint(1, 2)}" if rng.random() < 0.8 else None,
            "item_id": f"i{rng.randint(1, 12)}",
            "type": rng.choice(["view", "click", "add_to_cart", "purchase"]),
            "timestamp": AT + n * 7,
        }
        if rng.random() < 0.3:
            payload["context"] = {"device": rng.choice(["mobile", "desktop"])}
        events.append(parse_event(payload))
    return events


def _dump(client: redis.Redis, keys: Keys) -> dict[str, object]:
    """Every key of ``keys`` with its value (scores rounded) and whether it has a TTL."""
    out: dict[str, object] = {}
    for raw in client.scan_iter(match=keys.all_pattern(), count=1000):
        key = raw.decode()
        kind = client.type(key).decode()
        if kind == "list":
            value: object = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = [(m, round(s, 9)) for m, s in client.zrange(key, 0, -1, withscores=True)]
        else:
            value = client.get(key)
        expires = client.ttl(key) > 0
        if key.startswith(keys.event("")):  # the dedup marker names its process: not that
            value = (value or b"")[:1]  # type: ignore[index]
        out[key[len(keys.prefix) :]] = (kind, value, expires)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_one_call_per_batch_leaves_the_state_of_one_call_per_event(
    live_stack: object, seed: int
) -> None:
    limits = {"session_len": 5, "user_history_len": 8}
    batched = live_stack.settings(redis=limits)  # type: ignore[attr-defined]
    single = live_stack.settings(redis=limits)  # type: ignore[attr-defined]
    events = _events(seed)
    # a redelivery inside the batch and one of an earlier batch change nothing
    events = [*events[:40], events[10], *events[40:], events[60]]

    async def scenario() -> tuple[list[object], list[object]]:
        one = StateStore.from_settings(batched.redis)
        many = StateStore.from_settings(single.redis)
        try:
            together = await one.apply(events[:70], attribute={"click"})
            together += await one.apply(events[70:], attribute={"click"})
            apart = []
            for event in events:
                apart += await many.apply([event], attribute={"click"})
            return together, apart
        finally:
            await one.close()
            await many.close()

    together, apart = asyncio.run(scenario())
    client = redis.Redis.from_url(batched.redis.url)
    state = _dump(client, Keys(batched.redis.key_prefix))
    assert len(state) > 20
    assert state == _dump(client, Keys(single.redis.key_prefix))
    assert [a.applied for a in together] == [a.applied for a in apart]
    assert sum(not a.applied for a in together) == 2
    # each user's last event of a batch reads its history back: the same list either way
    for batch in (range(70), range(70, len(events))):
        last = {events[i].user_id: i for i in batch}  # type: ignore[attr-defined]
        for index in last.values():
            if together[index].applied:
                assert together[index].user_items == apart[index].user_items
                assert len(together[index].user_items) <= limits["user_history_len"]


def test_popularity_takes_events_in_any_time_order_and_stays_finite(live_stack: object) -> None:
    """The decayed popularity is log2(sum of 2^(t / half_life) * weight) whatever the order the
    events arrive in: an event much older than the item's score (a replayed old log) neither
    overflows to inf nor changes the score by more than its own tiny weight."""
    settings = live_stack.settings(redis={"popularity_half_life_s": 3600.0})  # type: ignore[attr-defined]
    half_life = settings.redis.popularity_half_life_s
    times = [AT, 0.0, AT + 3600.0, AT - 7200.0]
    events = [
        parse_event(
            {"event_id": f"t{n}", "user_id": "u", "item_id": "i1", "type": "view", "timestamp": at}
        )
        for n, at in enumerate(times)
    ]

    async def scenario() -> None:
        store = StateStore.from_settings(settings.redis)
        try:
            for event in events:
                await store.apply([event], attribute=set())
        finally:
            await store.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(settings.redis.url)
    score = client.zscore(Keys(settings.redis.key_prefix).popularity(), "i1")
    assert score is not None
    top = max(times) / half_life  # log2 of the sum, with the largest term factored out
    expected = top + math.log2(sum(2.0 ** (at / half_life - top) for at in times))
    assert math.isfinite(score)
    assert score == pytest.approx(expected, rel=1e-12)


def test_an_event_from_a_fast_clock_counts_in_popularity_as_at_most_the_allowed_skew(
    live_stack: object,
) -> None:
    """A client whose clock is 30 days ahead would, with a 1-day half-life, weigh 2^30 times
    a current event; its time is capped at the worker's clock plus the allowed skew."""
    settings = live_stack.settings(  # type: ignore[attr-defined]
        redis={"popularity_half_life_s": 86400.0, "popularity_max_future_s": 3600.0}
    )
    now = time.time()
    events = [
        parse_event(
            {"event_id": f"f{n}", "user_id": "u", "item_id": item, "type": "view", "timestamp": at}
        )
        for n, (item, at) in enumerate([("fast", now + 30 * 86400), ("now", now)])
    ]

    async def scenario() -> None:
        store = StateStore.from_settings(settings.redis)
        try:
            await store.apply(events, attribute=set())
        finally:
            await store.close()

    started = time.time()
    asyncio.run(scenario())
    client = redis.Redis.from_url(settings.redis.url)
    key = Keys(settings.redis.key_prefix).popularity()
    fast, current = client.zscore(key, "fast"), client.zscore(key, "now")
    assert fast is not None and current is not None
    # At most (worker clock + 1 h) / half-life: the cap, not 30 days ahead.
    assert fast <= (time.time() + 3600.0) / 86400.0 + 1e-9
    assert fast >= (started + 3600.0) / 86400.0 - 1e-9
    assert fast - current < 0.05  # 1 h ahead of a 1-day half-life: 2^(1/24), not 2^30
    stored = client.lrange(Keys(settings.redis.key_prefix).user_history("u"), 0, -1)
    assert b"fast" in stored  # the event itself is kept
