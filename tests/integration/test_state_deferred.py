"""Deferred state writes against real Redis: what a batch showed and which outputs were
delivered travel with the next batch's apply (one round trip per batch), reach Redis before
that batch's events (so a click in it is attributed), are flushed on demand or by a timer when
no batch follows, and survive a failed call. A batch retried after a failed call re-emits what
that call may have applied."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from streamrec.config import Settings
from streamrec.errors import StateError
from streamrec.events import parse_event
from streamrec.stack import free_port
from streamrec.state import store
from streamrec.state.keys import Keys
from streamrec.state.store import FLUSH_AFTER_S, Page, StateStore

pytestmark = pytest.mark.integration

AT = 1_700_000_000.0


def _event(n: int, kind: str = "view", session: str = "df-sess") -> object:
    return parse_event(
        {
            "event_id": f"df-{session}-{n}",
            "user_id": f"df-user-{session}",
            "session_id": session,
            "item_id": f"df-i{n}",
            "type": kind,
            "timestamp": AT + n,
        }
    )


def _page(rec_id: str, items: list[str], propensities: list[float] | None = None) -> Page:
    return Page(rec_id, items, propensities, "greedy", "v1", AT)


def _script_calls(client: redis.Redis) -> int:
    """Script calls Redis has served (every state round trip is one EVALSHA)."""
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_deferred_writes_travel_with_the_next_apply_before_its_events(
    stack_settings: Settings,
) -> None:
    client = redis.Redis.from_url(stack_settings.redis.url)
    keys = Keys(stack_settings.redis.key_prefix)

    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            first = [_event(1), _event(2)]
            await state.apply(first, attribute={"click"})
            written = state.defer_shown(
                {"s:df-sess": [_page("rec-1", ["df-i7", "df-i9"], [0.5, 0.25])]}
            )
            state.defer_confirm([e.event_id for e in first])  # type: ignore[attr-defined]
            assert not written.done()
            assert client.hlen(keys.shown("s:df-sess")) == 0  # not written yet
            calls = _script_calls(client)
            click = _event(9, "click")
            [outcome] = await state.apply([click], attribute={"click"})
            assert _script_calls(client) - calls == 1, "one round trip for writes + batch"
            assert written.done()
            # The page was written before the click was applied: attributed.
            assert outcome.shown == {
                "position": 1,
                "propensity": 0.25,
                "rec_id": "rec-1",
                "policy": "greedy",
                "model_version": "v1",
                "event_time": AT,
            }
            assert client.get(keys.event("df-df-sess-1")) == b"d"
            assert client.get(keys.event("df-df-sess-2")) == b"d"
            # Confirmed: a redelivery to another process is a plain duplicate.
            other = StateStore.from_settings(stack_settings.redis)
            again = await other.apply(first, attribute=set())
            await other.close()
            assert [(a.applied, a.reemit) for a in again] == [(False, False)] * 2
        finally:
            await state.close()

    asyncio.run(scenario())


def test_settle_flushes_what_no_apply_carried_and_a_timer_flushes_the_rest(
    stack_settings: Settings,
) -> None:
    client = redis.Redis.from_url(stack_settings.redis.url)
    keys = Keys(stack_settings.redis.key_prefix)

    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            event = _event(1, session="df-idle")
            await state.apply([event], attribute=set())
            written = state.defer_shown({"s:df-idle": [_page("rec-idle", ["a", "b"])]})
            await state.settle(written)  # no batch follows: written now
            assert sorted(client.hkeys(keys.shown("s:df-idle"))) == [b"a", b"b"]
            await state.settle(written)  # settled already: nothing to do
            # Only a confirmation pending, and the stream idle: the timer writes it.
            state.defer_confirm([event.event_id])  # type: ignore[attr-defined]
            marker = keys.event(event.event_id)  # type: ignore[attr-defined]
            assert client.get(marker) != b"d"
            await asyncio.sleep(FLUSH_AFTER_S * 3)
            assert client.get(marker) == b"d"
            # Nothing pending: settling an empty page costs no call.
            calls = _script_calls(client)
            await state.settle(state.defer_shown({"s:df-idle": []}))
            assert _script_calls(client) == calls
        finally:
            await state.close()

    asyncio.run(scenario())


def test_settle_waits_for_the_next_apply_to_carry_the_writes(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(stack_settings.redis.url)
    keys = Keys(stack_settings.redis.key_prefix)
    monkeypatch.setattr(store, "FLUSH_AFTER_S", 60.0)  # no timer flush in this test

    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            carried = state.defer_shown({"s:df-wait": [_page("rec-w", ["c"])]})
            calls = _script_calls(client)
            waiting = asyncio.ensure_future(state.settle(carried, within=30.0))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await state.apply([_event(1, session="df-wait")], attribute=set())
            await asyncio.wait_for(waiting, 5.0)
            assert _script_calls(client) - calls == 1, "the batch's apply was the only call"
            assert client.hexists(keys.shown("s:df-wait"), "c")
            # Nothing came within the wait: flushed alone.
            alone = state.defer_shown({"s:df-wait": [_page("rec-w2", ["d"])]})
            await asyncio.wait_for(state.settle(alone, within=0.1), 5.0)
            assert client.hexists(keys.shown("s:df-wait"), "d")
        finally:
            await state.close()

    asyncio.run(scenario())


def test_a_failed_call_keeps_its_deferred_writes_for_the_next(stack_settings: Settings) -> None:
    keys = Keys(stack_settings.redis.key_prefix)
    client = redis.Redis.from_url(stack_settings.redis.url)

    async def scenario() -> None:
        # A real connection failure: nothing listens on this port.
        down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        state = StateStore(down, stack_settings.redis)
        written = state.defer_shown({"s:df-fail": [_page("rec-f", ["x"])]})
        with pytest.raises(StateError):
            await state.apply([_event(1, session="df-fail")], attribute=set())
        with pytest.raises(StateError):
            await state.settle(written)
        assert not written.done()
        await down.aclose()
        state.client = aioredis.Redis.from_url(stack_settings.redis.url)  # Redis is back
        click = _event(2, "click", session="df-fail")
        [outcome] = await state.apply([click], attribute={"click"})
        assert written.done()
        assert outcome.shown is None  # item df-i2 was not shown; x was
        assert client.hkeys(keys.shown("s:df-fail")) == [b"x"]
        await state.close()

    asyncio.run(scenario())


def test_a_retried_batch_reemits_what_the_failed_call_applied(stack_settings: Settings) -> None:
    async def scenario() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            batch = [_event(1, session="df-re"), _event(2, session="df-re")]
            await state.apply(batch, attribute=set())  # applied; say the reply was lost
            retried = await state.apply(batch, attribute=set(), replay=True)
            assert [(a.applied, a.reemit) for a in retried] == [(False, True)] * 2
            assert retried[1].user_items == ["df-i1", "df-i2"]
            # Not a retry (a duplicate while this process delivers): plain duplicates.
            plain = await state.apply(batch, attribute=set())
            assert [(a.applied, a.reemit) for a in plain] == [(False, False)] * 2
        finally:
            await state.close()

    asyncio.run(scenario())
