"""The state client's connection pool: bounded, waits for a free connection, and tells an
exhausted pool apart from an unreachable Redis (no Redis needed: nothing connects here)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from streamrec.config import RedisSettings, Settings
from streamrec.errors import StateError
from streamrec.stack import free_port
from streamrec.state.store import StateStore


def test_pool_size_and_wait_come_from_the_settings_and_client_options_are_kept() -> None:
    store = StateStore.from_settings(
        RedisSettings(url="redis://127.0.0.1:1/3", max_connections=7, pool_timeout_s=1.5)
    )
    pool = store.client.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (7, 1.5)
    options = pool.connection_kwargs
    assert options["socket_timeout"] == 10
    assert options["socket_connect_timeout"] == 5
    assert options["health_check_interval"] == 30
    assert options["decode_responses"] is True
    assert (options["host"], options["port"], options["db"]) == ("127.0.0.1", 1, 3)
    assert store.client.auto_close_connection_pool  # closing the store closes its pool


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (RedisSettings().max_connections, RedisSettings().pool_timeout_s) == (64, 5.0)
    monkeypatch.setenv("STREAMREC_REDIS__MAX_CONNECTIONS", "12")
    monkeypatch.setenv("STREAMREC_REDIS__POOL_TIMEOUT_S", "0.5")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.redis.max_connections, settings.redis.pool_timeout_s) == (12, 0.5)
    with pytest.raises(ValueError):
        RedisSettings(max_connections=0)


async def test_an_exhausted_pool_waits_then_says_so_not_redis_down() -> None:
    store = StateStore.from_settings(RedisSettings(max_connections=1, pool_timeout_s=0.2))
    pool = store.client.connection_pool
    held = pool.get_available_connection()  # the only slot, taken without connecting
    try:
        started = time.monotonic()
        with pytest.raises(StateError) as raised:
            await store.history(session_id=None, user_id="u1")
        assert time.monotonic() - started >= 0.18  # it waited pool_timeout_s
        cause = raised.value.__cause__
        assert isinstance(cause, MaxConnectionsError)
        assert "STREAMREC_REDIS__MAX_CONNECTIONS" in str(cause)
    finally:
        await pool.release(held)
        await store.client.aclose()


async def test_a_redis_that_refuses_connections_is_not_an_exhausted_pool() -> None:
    store = StateStore.from_settings(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(StateError) as raised:
            await store.history(session_id=None, user_id="u1")
        cause = raised.value.__cause__
        assert isinstance(cause, RedisConnectionError)
        assert not isinstance(cause, MaxConnectionsError)
    finally:
        await store.client.aclose()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379/0"),
        ("redis://:s3cret@cache.internal:6380/2", "cache.internal:6380/2"),
        ("rediss://app:s3cret@[::1]/", "[::1]:6379"),
        ("unix:///run/redis.sock?db=1", "/run/redis.sock?db=1"),
        ("redis://127.0.0.1:6379?db=3", "127.0.0.1:6379/3"),
    ],
)
def test_redis_is_named_by_its_address_never_its_credentials(url: str, address: str) -> None:
    from streamrec.state.store import redis_address

    assert redis_address(url) == address
    assert "s3cret" not in StateStore.from_settings(RedisSettings(url=url)).address
