"""Reward attribution across the pages of one micro-batch, against real Redis: a session with
two qualifying events in a batch saw two pages, and a later click on an item of either page is
rewarded under the page that showed it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from streamrec.config import Settings
from streamrec.events import parse_event
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.service import Recommender
from streamrec.state.keys import Keys
from streamrec.state.store import Shown, StateStore
from streamrec.stream.processor import BatchProcessor, BatchResult

pytestmark = pytest.mark.integration

T0 = 1_700_000_000


def _event(event_id: str, user: str, item: str, kind: str, ts: int) -> Any:
    return parse_event(
        {
            "event_id": event_id,
            "user_id": user,
            "session_id": f"{user}-s",
            "item_id": item,
            "type": kind,
            "timestamp": ts,
        }
    )


def test_every_page_of_a_batch_is_attributable(stack_settings: Settings) -> None:
    # p0 is the most popular item, then p1, ...: 30 - i clicks each from other users.
    warm = [
        _event(f"at-w{i}-{n}", f"at-other{n}", f"p{i}", "click", T0)
        for i in range(30)
        for n in range(30 - i)
    ]

    async def scenario() -> tuple[BatchResult, BatchResult]:
        state = StateStore.from_settings(stack_settings.redis)
        processor = BatchProcessor(
            state, Recommender(state, PopularityRanker()), stack_settings.stream
        )
        try:
            await state.apply(warm, attribute=set())
            # One batch, two views: page 1 excludes p0 (shows p1...), page 2 excludes p0, p1.
            views = await processor.process(
                [
                    _event("at-v1", "at-u", "p0", "view", T0 + 10),
                    _event("at-v2", "at-u", "p1", "view", T0 + 11),
                ]
            )
            click = await processor.process([_event("at-c", "at-u", "p1", "click", T0 + 20)])
        finally:
            await state.close()
        return views, click

    views, click = asyncio.run(scenario())
    (_, first), (_, second) = views.recommendations
    first_items = list(first.item_ids)
    second_items = list(second.item_ids)
    assert "p1" in first_items and "p1" not in second_items, (first_items, second_items)
    assert len(click.rewards) == 1, "the click on an item only page 1 showed is rewarded"
    reward = click.rewards[0][1]
    assert (reward.rec_id, reward.item_id) == (first.rec_id, "p1")
    assert reward.position == first_items.index("p1")


def test_a_scope_with_thousands_of_items_is_stored_whole_and_the_latest_page_wins(
    stack_settings: Settings,
) -> None:
    client = redis.Redis.from_url(stack_settings.redis.url)
    keys = Keys(stack_settings.redis.key_prefix)
    old = [Shown(f"big-{i}", "rec-old", i, None, "greedy", "v1", T0) for i in range(3000)]
    new = [Shown(f"big-{i}", "rec-new", i, None, "greedy", "v1", T0) for i in range(0, 3000, 2)]

    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            await state.remember_shown_many({"s:big": old + new})
        finally:
            await state.close()

    asyncio.run(scenario())
    stored = {
        field.decode(): json.loads(value)["rec_id"]
        for field, value in client.hgetall(keys.shown("s:big")).items()
    }
    assert len(stored) == 3000
    assert {rec for item, rec in stored.items() if int(item.split("-")[1]) % 2 == 0} == {"rec-new"}
    assert {rec for item, rec in stored.items() if int(item.split("-")[1]) % 2 == 1} == {"rec-old"}
