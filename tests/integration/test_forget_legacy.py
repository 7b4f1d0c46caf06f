"""forget-user and shown pages written under the layout before ``shown_scope``."""

from __future__ import annotations

import asyncio

import redis

from streamrec.config import Settings
from streamrec.state.keys import Keys, shown_scope
from streamrec.state.store import StateStore


def test_forget_user_deletes_old_layout_pages_of_the_users_sessions(
    stack_settings: Settings,
) -> None:
    keys = Keys(stack_settings.redis.key_prefix)
    raw = redis.Redis.from_url(stack_settings.redis.url)
    raw.sadd(keys.user_sessions("legacy-user"), "legacy-s1", "s:x")
    raw.hset(keys.shown("legacy-s1"), "i1", '{"rec_id": "r1", "position": 0}')
    # "s:x" is the user's session id, but r:s:x is session x's page in the new layout
    other = keys.shown(shown_scope("x", "another-user"))
    raw.hset(other, "i2", '{"rec_id": "r2", "position": 0}')

    async def forget() -> dict[str, int]:
        state = StateStore.from_settings(stack_settings.redis)
        try:
            return await state.forget_user("legacy-user")
        finally:
            await state.close()

    report = asyncio.run(forget())
    assert not raw.exists(keys.shown("legacy-s1"))
    assert raw.exists(other)
    assert report["sessions"] == 2
