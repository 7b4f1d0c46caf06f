"""The HTTP API under more concurrent requests than it has Redis connections (real stack).

The state client's pool holds ``STREAMREC_REDIS__MAX_CONNECTIONS``; a request beyond that
waits for a free connection (up to ``STREAMREC_REDIS__POOL_TIMEOUT_S``) instead of failing at
once, a pool still exhausted after the wait is a 503 that says so (not "Redis unavailable"),
and ``/readyz`` reports Redis down only when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from streamrec.config import Settings
from streamrec.events import parse_event
from streamrec.serving.api import create_app
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.service import Recommender
from streamrec.stack import free_port
from streamrec.state.store import StateStore
from streamrec.stream.processor import BatchProcessor
from tests.conftest import LiveStack

pytestmark = pytest.mark.integration

BURST = 300  # concurrent requests: beyond the pool below, and beyond redis-py's default 100
POOL = 4
PROBE_EVERY = 10  # a /readyz among every 10 requests of the burst


def _load(settings: Settings) -> None:
    """Six users with five clicks each, written by the worker's path."""
    events = [
        {
            "event_id": f"pool-{user}-{step}",
            "user_id": f"u{user}",
            "session_id": f"s{user}",
            "item_id": f"i{(user + step) % 9}",
            "type": "click",
            "timestamp": 1_700_000_000 + 3600 * step,
        }
        for user in range(6)
        for step in range(5)
    ]

    async def load() -> None:
        state = StateStore.from_settings(settings.redis)
        processor = BatchProcessor(state, Recommender(state, PopularityRanker()), settings.stream)
        await processor.process([parse_event(e) for e in events])
        await state.close()

    asyncio.run(load())


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> list[StateStore]:
    """The StateStores the app under test builds (to look at, or hold, its pool)."""
    built: list[StateStore] = []
    original = StateStore.from_settings.__func__  # type: ignore[attr-defined]

    def capture(cls: type[StateStore], settings: Any) -> StateStore:
        store: StateStore = original(cls, settings)
        built.append(store)
        return store

    monkeypatch.setattr(StateStore, "from_settings", classmethod(capture))
    return built


@pytest.fixture
def served(live_stack: LiveStack, stores: list[StateStore]) -> Iterator[str]:
    """The API on a real uvicorn server (own thread and event loop), pool of ``POOL``."""
    settings = live_stack.settings(redis={"max_connections": POOL, "pool_timeout_s": 10.0})
    _load(settings)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, PopularityRanker()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        backlog=4096,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_burst_beyond_the_pool_waits_for_connections_and_stays_ready(
    served: str, stores: list[StateStore]
) -> None:
    """BURST recommendation requests at once, a readiness probe among every PROBE_EVERY."""

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=2 * BURST, max_keepalive_connections=2 * BURST)
        async with httpx.AsyncClient(base_url=served, limits=limits, timeout=60) as client:
            calls = []
            for n in range(BURST):
                if n % PROBE_EVERY == PROBE_EVERY // 2:
                    calls.append(client.get("/readyz"))
                calls.append(
                    client.get("/v1/recommendations", params={"user_id": f"u{n % 6}", "k": 3})
                )
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(burst())
    probes = [a for a in answers if a.url.path == "/readyz"]
    recommendations = [a for a in answers if a.url.path != "/readyz"]
    assert len(recommendations) == BURST and len(probes) == BURST // PROBE_EVERY
    failed = [(a.status_code, a.text) for a in recommendations if a.status_code != 200]
    assert not failed, f"{len(failed)} of {BURST} failed, e.g. {failed[:3]}"
    assert all(len(a.json()["items"]) == 3 for a in recommendations)
    not_ready = [p.text for p in probes if p.status_code != 200]
    assert not not_ready, f"/readyz not ready {len(not_ready)} times: {not_ready[:3]}"
    assert all(p.json()["redis"] is True for p in probes)
    store = stores[-1]  # the app's (built at start-up, after the loader's)
    pool = store.client.connection_pool
    # The bound held: never more than POOL connections opened for the burst.
    opened = len(pool._available_connections) + len(pool._in_use_connections)
    assert opened <= POOL


@pytest.fixture
def tiny(live_stack: LiveStack, stores: list[StateStore]) -> Iterator[TestClient]:
    """The API with a pool of one connection and a short wait for it."""
    settings = live_stack.settings(redis={"max_connections": 1, "pool_timeout_s": 0.3})
    _load(settings)
    with TestClient(create_app(settings, PopularityRanker())) as client:
        yield client


def test_an_exhausted_pool_is_a_clear_503_and_redis_stays_ready(
    tiny: TestClient, stores: list[StateStore]
) -> None:
    params = {"user_id": "u1", "k": 3}
    assert tiny.get("/v1/recommendations", params=params).status_code == 200
    store = stores[-1]  # the app's (built at start-up, after the loader's)
    pool = store.client.connection_pool
    portal = tiny.portal
    assert portal is not None
    held = portal.call(pool.get_connection)  # the pool's only connection, taken in the app's loop
    try:
        started = time.monotonic()
        busy = tiny.get("/v1/recommendations", params=params)
        waited = time.monotonic() - started
        assert busy.status_code == 503
        detail = busy.json()["detail"]
        assert "pool exhausted" in detail
        assert "STREAMREC_REDIS__MAX_CONNECTIONS" in detail
        assert "unavailable" not in detail
        assert busy.headers["retry-after"]
        assert waited >= 0.25  # it waited for the pool_timeout_s before giving up
        ready = tiny.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"redis": True, "kafka": True, "status": "ready"}
    finally:
        portal.call(pool.release, held)
    assert tiny.get("/v1/recommendations", params=params).status_code == 200


def test_a_redis_that_is_down_is_still_unavailable_and_not_ready(live_stack: LiveStack) -> None:
    settings = live_stack.settings(redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(settings, PopularityRanker())) as client:
        down = client.get("/v1/recommendations", params={"user_id": "u1"})
        assert down.status_code == 503
        assert down.json() == {"detail": "state store unavailable, retry later"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"redis": False, "kafka": True, "status": "not ready"}
