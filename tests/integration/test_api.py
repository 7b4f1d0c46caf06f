"""The HTTP API over real Redis state written by the real worker path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from streamrec.config import Settings
from streamrec.events import parse_event
from streamrec.serving.api import create_app
from streamrec.serving.popularity import PopularityRanker
from streamrec.serving.service import Recommender
from streamrec.state.store import StateStore
from streamrec.stream.processor import BatchProcessor

pytestmark = pytest.mark.integration


def _events() -> list[dict[str, object]]:
    rows = []
    for user in range(6):
        for step in range(5):
            rows.append(
                {
                    "event_id": f"api-{user}-{step}",
                    "user_id": f"u{user}",
                    "session_id": f"s{user}",
                    "item_id": f"i{(user + step) % 9}",
                    "type": "click",
                    "timestamp": 1_700_000_000 + 3600 * step,
                    "context": {"device": "tv" if user == 0 else "mobile"},
                }
            )
    return rows


@pytest.fixture
def client(stack_settings: Settings) -> Iterator[TestClient]:
    async def load() -> None:
        state = StateStore.from_settings(stack_settings.redis)
        processor = BatchProcessor(
            state, Recommender(state, PopularityRanker()), stack_settings.stream
        )
        await processor.process([parse_event(e) for e in _events()])
        await state.close()

    asyncio.run(load())
    with TestClient(create_app(stack_settings, PopularityRanker())) as test_client:
        yield test_client


def test_user_recommendations_exclude_seen_items(client: TestClient) -> None:
    response = client.get("/v1/recommendations", params={"user_id": "u1", "k": 3})
    assert response.status_code == 200
    body = response.json()
    items = [item["item_id"] for item in body["items"]]
    seen = {f"i{(1 + step) % 9}" for step in range(5)}
    assert len(items) == 3
    assert not set(items) & seen
    assert body["model_version"] == "popularity-v1"
    assert body["user_id"] == "u1"


def test_cold_start_gets_context_popular_items_never_empty(client: TestClient) -> None:
    anonymous = client.get("/v1/recommendations", params={"k": 5}).json()
    assert len(anonymous["items"]) == 5
    unknown = client.get("/v1/recommendations", params={"user_id": "nobody", "k": 5}).json()
    assert len(unknown["items"]) == 5
    # Only user 0 used a tv; its items lead the tv list.
    on_tv = client.get("/v1/recommendations", params={"device": "tv", "k": 5}).json()
    assert {item["item_id"] for item in on_tv["items"]} == {f"i{s % 9}" for s in range(5)}


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"k": 10_000},
        {"k": "many"},
        {"hour": 24},
        {"session_id": ""},
        {"user_id": "x" * 300},
        {"user_id": "\x00"},
        {"session_id": "a\tb"},
        {"user_id": "\u200b"},
    ],
)
def test_bad_parameters_are_clear_4xx(client: TestClient, params: dict[str, object]) -> None:
    response = client.get("/v1/recommendations", params=params)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_forget_user_removes_every_trace(client: TestClient, stack_settings: Settings) -> None:
    import redis

    from streamrec.state.keys import Keys

    response = client.delete("/v1/users/u2")
    assert response.status_code == 200
    report = response.json()
    assert report["user_id"] == "u2"
    assert report["removed"]["history_items"] == 5
    assert report["removed"]["sessions"] == 1
    assert report["removed"]["events_counted"] == 5
    raw = redis.Redis.from_url(stack_settings.redis.url)
    leftovers = [
        key
        for key in raw.scan_iter(Keys(stack_settings.redis.key_prefix).all_pattern())
        if b"u2" in key or b":s2" in key
    ]
    assert leftovers == []
    again = client.delete("/v1/users/u2").json()
    assert again["removed"]["keys_deleted"] == 0
    history = client.get("/v1/recommendations", params={"user_id": "u2"}).json()
    assert len(history["items"]) == 9  # a cold-start user again: the whole 9-item catalogue


def test_forget_user_takes_ids_with_a_slash(client: TestClient) -> None:
    for path in ("/v1/users/shop%2F42", "/v1/users/shop/42"):
        response = client.delete(path)
        assert response.status_code == 200, response.text
        assert response.json()["user_id"] == "shop/42"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"redis": True, "kafka": True, "status": "ready"}
    assert "/v1/recommendations" in client.get("/openapi.json").json()["paths"]


def test_forgetting_a_user_named_like_a_session_leaves_that_session_alone(
    client: TestClient, stack_settings: Settings
) -> None:
    import redis

    from streamrec.state.keys import Keys, shown_scope

    keys = Keys(stack_settings.redis.key_prefix)
    raw = redis.Redis.from_url(stack_settings.redis.url)
    shown = keys.shown(shown_scope("s3", "u3"))
    assert raw.exists(shown) and raw.exists(keys.session("s3"))
    report = client.delete("/v1/users/s3").json()  # no such user; s3 is u3's session
    assert report["removed"]["keys_deleted"] == 0
    assert raw.exists(shown) and raw.exists(keys.session("s3"))


def test_a_session_paired_with_another_user_id_still_excludes_the_session_items(
    client: TestClient,
) -> None:
    """Events of session s1 carried user u1; a caller that knows the visitor by another id
    (logged in since) asks with both: what s1 saw is still not recommended."""
    seen = {f"i{(1 + step) % 9}" for step in range(5)}
    for params in ({"session_id": "s1", "user_id": "member-77"}, {"session_id": "s1"}):
        body = client.get("/v1/recommendations", params={**params, "k": 9}).json()
        items = {item["item_id"] for item in body["items"]}
        assert items and not items & seen, params


def test_ids_are_read_as_the_event_contract_reads_them(client: TestClient) -> None:
    padded = client.get("/v1/recommendations", params={"user_id": " u1 ", "k": 9}).json()
    plain = client.get("/v1/recommendations", params={"user_id": "u1", "k": 9}).json()
    assert padded["items"] == plain["items"]
    for path in ("/v1/users/%00", "/v1/users/%20%20", "/v1/users/a%09b"):
        response = client.delete(path)
        assert response.status_code == 422 and "user_id" in response.json()["detail"], path
    assert (
        "503"
        in client.get("/openapi.json").json()["paths"]["/v1/recommendations"]["get"]["responses"]
    )
