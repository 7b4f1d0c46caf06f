"""Outputs-delivered markers against real Redis: an event applied by a process that never
confirmed it is re-emitted when another process gets it again (no state change, same history and
attribution); a duplicate of an event still in flight in this process, or of a confirmed one, is
a plain duplicate."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from streamrec.config import Settings
from streamrec.events import parse_event
from streamrec.state.keys import Keys
from streamrec.state.store import Shown, StateStore
from tests.helpers import redis_snapshot

pytestmark = pytest.mark.integration


def _event(n: int, kind: str = "view") -> object:
    return parse_event(
        {
            "event_id": f"dl-{n}",
            "user_id": "dl-user",
            "session_id": "dl-sess",
            "item_id": f"dl-i{n}",
            "type": kind,
            "timestamp": 1_700_000_000 + n,
        }
    )


def test_unconfirmed_events_are_reemitted_confirmed_ones_are_not(
    stack_settings: Settings,
) -> None:
    client = redis.Redis.from_url(stack_settings.redis.url)
    keys = Keys(stack_settings.redis.key_prefix)

    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            first = [_event(1), _event(2)]
            applied = await state.apply(first, attribute={"click"})
            assert [a.applied for a in applied] == [True, True]
            await state.remember_shown(
                "s:dl-sess", [Shown("dl-i9", "rec-1", 0, 0.5, "greedy", "v1", 1_700_000_002.0)]
            )
            click = _event(9, "click")
            assert (await state.apply([click], attribute={"click"}))[0].shown is not None
            before = redis_snapshot(client, keys.all_pattern(), skip_prefix=keys.event(""))
            # A duplicate while this process is still delivering: a plain duplicate.
            inflight = await state.apply([*first, click], attribute={"click"})
            assert [(a.applied, a.reemit) for a in inflight] == [(False, False)] * 3
            # Redelivered to another process before confirmation (this one died): re-emit,
            # change nothing.
            restarted = StateStore.from_settings(stack_settings.redis)
            again = await restarted.apply([*first, click], attribute={"click"})
            await restarted.close()
            assert [(a.applied, a.reemit) for a in again] == [(False, True)] * 3
            assert again[1].user_items == ["dl-i1", "dl-i2", "dl-i9"]
            assert again[2].shown is not None and again[2].shown["rec_id"] == "rec-1"
            assert redis_snapshot(client, keys.all_pattern(), skip_prefix=keys.event("")) == before
            await state.confirm(["dl-1", "dl-2", "dl-9", "never-seen"])
            assert client.get(keys.event("dl-1")) == b"d"
            assert client.ttl(keys.event("dl-1")) > 0  # TTL kept
            assert not client.exists(keys.event("never-seen"))
            late = await state.apply([*first, click], attribute={"click"})
            assert [(a.applied, a.reemit) for a in late] == [(False, False)] * 3
            assert redis_snapshot(client, keys.all_pattern(), skip_prefix=keys.event("")) == before
        finally:
            await state.close()

    asyncio.run(scenario())


def test_shown_items_are_stored_per_scope_with_a_ttl_and_scripts_survive_a_flush(
    stack_settings: Settings,
) -> None:
    client = redis.Redis.from_url(stack_settings.redis.url)
    keys = Keys(stack_settings.redis.key_prefix)
    at = 1_700_000_100.0

    def page(rec_id: str, items: list[str]) -> list[Shown]:
        return [
            Shown(item, rec_id, position, 0.25 * position or None, "greedy", "v1", at)
            for position, item in enumerate(items)
        ]

    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            await state.remember_shown_many(
                {
                    "s:sh-a": page("rec-a", ["x", "ÿ-é"]),
                    "s:sh-b": page("rec-b", ["y"]),
                    "s:sh-c": [],
                }
            )
            stored = {
                field.decode(): json.loads(value)
                for field, value in client.hgetall(keys.shown("s:sh-a")).items()
            }
            assert stored == {
                "x": {
                    "position": 0,
                    "propensity": None,
                    "rec_id": "rec-a",
                    "policy": "greedy",
                    "model_version": "v1",
                    "event_time": at,
                },
                "ÿ-é": {
                    "position": 1,
                    "propensity": 0.25,
                    "rec_id": "rec-a",
                    "policy": "greedy",
                    "model_version": "v1",
                    "event_time": at,
                },
            }
            assert (
                0 < client.ttl(keys.shown("s:sh-a")) <= max(60, stack_settings.redis.session_ttl_s)
            )
            assert client.hkeys(keys.shown("s:sh-b")) == [b"y"]
            assert not client.exists(keys.shown("s:sh-c"))
            client.script_flush()  # Redis restarted or flushed its scripts: loaded again
            await state.remember_shown_many({"s:sh-b": page("rec-b2", ["z"])})
            assert sorted(client.hkeys(keys.shown("s:sh-b"))) == [b"y", b"z"]
            client.script_flush()  # and so are the state update's and the confirmation's
            assert (await state.apply([_event(50)], attribute=set()))[0].applied
            client.script_flush()
            await state.confirm(["dl-50"])
            assert client.get(keys.event("dl-50")) == b"d"
        finally:
            await state.close()

    asyncio.run(scenario())
