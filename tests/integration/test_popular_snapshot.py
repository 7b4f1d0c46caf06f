"""The recommender's snapshot of popular items, against real Redis: a short (still growing)
list is read again on every batch while it could leave a request unfilled; a full one, or a
short context list backed by an overall list that fills the request, is served from the
snapshot until it ages out."""

from __future__ import annotations

import asyncio

import pytest

from streamrec.config import Settings
from streamrec.events import parse_event
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.ranker import History
from streamrec.serving.service import Recommender, Request
from streamrec.state.store import StateStore

pytestmark = pytest.mark.integration


def _clicks(prefix: str, items: range, *, at: int = 1_700_000_000) -> list[object]:
    return [
        parse_event(
            {
                "event_id": f"{prefix}-{item}",
                "user_id": f"{prefix}-u{item}",
                "session_id": f"{prefix}-s{item}",
                "item_id": f"{prefix}-i{item}",
                "type": "click",
                "timestamp": at + item,
            }
        )
        for item in items
    ]


def _request(hour: int | None = None) -> Request:
    return Request(History([], user_id="someone", session_id="fresh"), hour=hour)


def test_short_popular_list_is_reread_every_batch(stack_settings: Settings) -> None:
    async def scenario() -> tuple[int, int]:
        state = StateStore.from_settings(stack_settings.redis)
        recommender = Recommender(state, PopularityRanker(), popular_refresh_s=3600.0)
        try:
            await state.apply(_clicks("short", range(3)), attribute=set())
            first = (await recommender.rank([_request()], k=10))[0]
            await state.apply(_clicks("short", range(3, 20)), attribute=set())
            second = (await recommender.rank([_request()], k=10))[0]
        finally:
            await state.close()
        return len(first.item_ids), len(second.item_ids)

    first, second = asyncio.run(scenario())
    assert first == 3
    assert second == 10, "a catalogue smaller than the snapshot must not be served stale"


def test_full_popular_list_is_served_from_the_snapshot(stack_settings: Settings) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        state = StateStore.from_settings(stack_settings.redis)
        recommender = Recommender(state, PopularityRanker(), popular_refresh_s=1.0)
        try:
            await state.apply(_clicks("full", range(300)), attribute=set())
            before = (await recommender.rank([_request()], k=5))[0].item_ids
            # Make a brand-new item the most popular one.
            hot = [
                parse_event(
                    {
                        "event_id": f"hot-{n}",
                        "user_id": f"hot-u{n}",
                        "item_id": "full-hot",
                        "type": "click",
                        "timestamp": 1_700_000_400,
                    }
                )
                for n in range(50)
            ]
            await state.apply(hot, attribute=set())
            cached = (await recommender.rank([_request()], k=5))[0].item_ids
            await asyncio.sleep(1.2)
            refreshed = (await recommender.rank([_request()], k=5))[0].item_ids
        finally:
            await state.close()
        return before, cached, refreshed

    before, cached, refreshed = asyncio.run(scenario())
    assert cached == before, "a full list younger than popular_refresh_s comes from the snapshot"
    assert refreshed[0] == "full-hot"


def test_short_context_list_is_served_from_the_snapshot_when_the_overall_list_fills(
    stack_settings: Settings,
) -> None:
    # 300 items clicked at 22:xx UTC, three at 01:xx: the 01 list is short, the overall full.
    late, early = 1_700_000_000, 1_700_000_000 + 3 * 3600
    hour = 1

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        state = StateStore.from_settings(stack_settings.redis)
        recommender = Recommender(state, PopularityRanker(), popular_refresh_s=1.0)
        try:
            await state.apply(_clicks("ctx-all", range(300), at=late), attribute=set())
            await state.apply(_clicks("ctx-one", range(3), at=early), attribute=set())
            before = (await recommender.rank([_request(hour)], k=5))[0].item_ids
            hot = [
                parse_event(
                    {
                        "event_id": f"ctx-hot-{n}",
                        "user_id": f"ctx-hot-u{n}",
                        "item_id": "ctx-hot",
                        "type": "click",
                        "timestamp": early + 60,
                    }
                )
                for n in range(50)
            ]
            await state.apply(hot, attribute=set())
            cached = (await recommender.rank([_request(hour)], k=5))[0].item_ids
            await asyncio.sleep(1.2)
            refreshed = (await recommender.rank([_request(hour)], k=5))[0].item_ids
        finally:
            await state.close()
        return before, cached, refreshed

    before, cached, refreshed = asyncio.run(scenario())
    assert len(before) == 5, "the overall list fills up after the context's three items"
    assert set(before[:3]) == {f"ctx-one-i{n}" for n in range(3)}
    assert cached == before, "a short context list backed by a full overall list is a snapshot"
    assert refreshed[0] == "ctx-hot"


def test_a_device_without_events_gets_its_hours_popular_items(stack_settings: Settings) -> None:
    """Cold start by context: a device's list is filled from the hour's, then the overall."""
    five_am = 1_699_938_000  # 2023-11-14 05:00 UTC

    def clicks(item: str, times: int, at: int, device: str | None = None) -> list[object]:
        return [
            parse_event(
                {
                    "event_id": f"{item}-{n}",
                    "user_id": f"{item}-u{n}",
                    "item_id": item,
                    "type": "click",
                    "timestamp": at + n,
                    **({"context": {"device": device}} if device else {}),
                }
            )
            for n in range(times)
        ]

    async def scenario() -> dict[str | None, list[str]]:
        state = StateStore.from_settings(stack_settings.redis)
        recommender = Recommender(state, PopularityRanker(), popular_refresh_s=0.0)
        events = [
            *(e for i in range(3) for e in clicks(f"noon-{i}", 20, five_am + 7 * 3600)),
            *(e for i in range(3) for e in clicks(f"five-{i}", 3, five_am)),
            *clicks("phone-0", 2, five_am, device="phone"),
        ]
        try:
            await state.apply(events, attribute=set())
            answers = {}
            for device in ("tv", "phone", None):
                request = Request(History([], user_id="new", session_id="new"), 5, device)
                answers[device] = (await recommender.rank([request], k=4))[0].item_ids
        finally:
            await state.close()
        return answers

    answers = asyncio.run(scenario())
    assert set(answers["tv"][:3]) == {"five-0", "five-1", "five-2"}, answers
    assert answers["phone"][0] == "phone-0"
    assert set(answers["phone"][1:4]) == {"five-0", "five-1", "five-2"}
    assert set(answers[None][:3]) == {"five-0", "five-1", "five-2"}
