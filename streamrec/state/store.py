"""Session and user state in Redis: one round trip per micro-batch, idempotent by event_id.

:meth:`StateStore.apply` runs one Lua script call per event, all in a single pipeline (one round
trip). Each call is atomic: it claims the event id with ``SET NX`` and only then updates the
session, the user history and counters, the decayed popularity, and looks up whether the item
was recommended to this session (reward attribution). A redelivered event (same id, within
``dedup_ttl_s``) therefore changes nothing. The script returns the histories after the update,
so ranking needs no second read.

Trade-offs: keys of one event span hash slots, so this targets a single Redis (or a primary with
replicas / Sentinel), not Redis Cluster. The dedup window is bounded (``dedup_ttl_s``); an event
redelivered after that would count again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from streamrec import metrics
from streamrec.config import RedisSettings
from streamrec.errors import StateError
from streamrec.state.keys import Keys

__all__ = ["POPULARITY_WEIGHTS", "Applied", "Shown", "StateStore"]

log = logging.getLogger(__name__)

#: How much one event of each type adds to an item's popularity.
POPULARITY_WEIGHTS = {"view": 1.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0, "rating": 1.0}

_APPLY = """
-- KEYS: 1 dedup, 2 session, 3 user history, 4 user counters, 5 user sessions,
--       6 pop, 7 pop by hour, 8 pop by device ('' when none), 9 shown-to-this-session
-- ARGV: 1 entry, 2 item, 3 type, 4 ts, 5 session_len, 6 user_len, 7 session_ttl, 8 user_ttl,
--       9 dedup_ttl, 10 weight, 11 half_life, 12 session_id ('' when none), 13 attribute (0/1)
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[9]) then
  return {0}
end
local ts = tonumber(ARGV[4])
local user_ttl = tonumber(ARGV[8])
local session_items = {}
if ARGV[12] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  redis.call('SADD', KEYS[5], ARGV[12])
  redis.call('EXPIRE', KEYS[5], user_ttl)
  session_items = redis.call('LRANGE', KEYS[2], 0, -1)
end
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', KEYS[3], user_ttl)
redis.call('HINCRBY', KEYS[4], 'events', 1)
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
redis.call('EXPIRE', KEYS[4], user_ttl)
local weight = tonumber(ARGV[10])
local now = ts / tonumber(ARGV[11])
local function bump(key)
  local old = redis.call('ZSCORE', key, ARGV[2])
  local score
  if old then
    score = now + math.log(2 ^ (tonumber(old) - now) + weight) / math.log(2)
  else
    score = now + math.log(weight) / math.log(2)
  end
  redis.call('ZADD', key, score, ARGV[2])
end
bump(KEYS[6])
bump(KEYS[7])
if KEYS[8] ~= '' then bump(KEYS[8]) end
local shown = false
if ARGV[13] == '1' then
  shown = redis.call('HGET', KEYS[9], ARGV[2])
end
return {1, session_items, redis.call('LRANGE', KEYS[3], 0, -1), shown}
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """Outcome of applying one event."""

    applied: bool  # False: already applied before (duplicate)
    session_items: list[str]  # oldest first
    user_items: list[str]  # oldest first
    shown: dict[str, Any] | None  # the recommendation that showed this item, if any


@dataclass(frozen=True, slots=True)
class Shown:
    """An item shown in a recommendation, remembered for reward attribution."""

    item_id: str
    rec_id: str
    position: int
    propensity: float | None
    policy: str
    model_version: str
    event_time: float


def _entry(item: str, kind: str, ts: float) -> str:
    return f"{item}\t{kind}\t{ts:.3f}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _items(entries: Sequence[bytes | str]) -> list[str]:
    """Entries are stored newest first; return item ids oldest first."""
    return [_text(entry).split("\t", 1)[0] for entry in reversed(entries)]


class StateStore:
    """Async Redis state. Create with :meth:`from_settings`; close with :meth:`close`."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._apply_sha: str | None = None

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> StateStore:
        client = aioredis.Redis.from_url(
            settings.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        return cls(client, settings)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def apply(self, events: Sequence[Any], *, attribute: set[str]) -> list[Applied]:
        """Apply a micro-batch of events in one round trip; see the module docstring."""
        if not events:
            return []
        try:
            return await self._apply_once(events, attribute)
        except NoScriptError:  # Redis restarted or flushed its script cache
            self._apply_sha = None
            return await self._apply_once(events, attribute)

    async def _apply_once(self, events: Sequence[Any], attribute: set[str]) -> list[Applied]:
        cfg = self.settings
        keys = self.keys
        if self._apply_sha is None:
            self._apply_sha = str(await self.client.script_load(_APPLY))
        sha = self._apply_sha
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            ts = event.ts
            device = event.context.device if event.context and event.context.device else None
            kind = event.type.value
            scope = event.session_id or event.user_id
            batch_keys = [
                keys.event(event.event_id),
                keys.session(event.session_id or ""),
                keys.user_history(event.user_id),
                keys.user_counters(event.user_id),
                keys.user_sessions(event.user_id),
                keys.popularity(),
                keys.popularity(hour=time.gmtime(ts).tm_hour),
                keys.popularity(device=device) if device else "",
                keys.shown(scope),
            ]
            pipe.evalsha(
                sha,
                len(batch_keys),
                *batch_keys,
                _entry(event.item_id, kind, ts),
                event.item_id,
                kind,
                ts,
                cfg.session_len,
                cfg.user_history_len,
                cfg.session_ttl_s,
                cfg.user_ttl_s,
                cfg.dedup_ttl_s,
                POPULARITY_WEIGHTS.get(kind, 1.0),
                cfg.popularity_half_life_s,
                event.session_id or "",
                "1" if kind in attribute else "0",
            )
        started = time.perf_counter()
        try:
            replies = await pipe.execute()
        except NoScriptError:
            raise
        except RedisError as exc:
            raise StateError(f"applying {len(events)} events failed: {exc}") from exc
        metrics.REDIS_SECONDS.labels("apply").observe(time.perf_counter() - started)
        out = []
        for reply in replies:
            if not reply[0]:
                out.append(Applied(False, [], [], None))
                continue
            shown = json.loads(reply[3]) if reply[3] else None
            out.append(Applied(True, _items(reply[1]), _items(reply[2]), shown))
        return out

    async def remember_shown(self, scope: str, shown: Sequence[Shown]) -> None:
        """Remember what was shown to a session (or user) for reward attribution."""
        await self.remember_shown_many({scope: list(shown)})

    async def remember_shown_many(self, by_scope: dict[str, list[Shown]]) -> None:
        if not by_scope:
            return
        pipe = self.client.pipeline(transaction=False)
        ttl = max(60, self.settings.session_ttl_s)
        for scope, shown in by_scope.items():
            if not shown:
                continue
            key = self.keys.shown(scope)
            pipe.hset(
                key,
                mapping={
                    item.item_id: json.dumps(
                        {
                            "rec_id": item.rec_id,
                            "position": item.position,
                            "propensity": item.propensity,
                            "policy": item.policy,
                            "model_version": item.model_version,
                            "event_time": item.event_time,
                        }
                    )
                    for item in shown
                },
            )
            pipe.expire(key, ttl)
        started = time.perf_counter()
        try:
            await pipe.execute()
        except RedisError as exc:
            raise StateError(f"remembering shown items failed: {exc}") from exc
        metrics.REDIS_SECONDS.labels("remember_shown").observe(time.perf_counter() - started)

    async def history(self, *, session_id: str | None, user_id: str | None) -> list[str]:
        """Items of the user (or, without a user, of the session), oldest first."""
        if user_id:
            key = self.keys.user_history(user_id)
        elif session_id:
            key = self.keys.session(session_id)
        else:
            return []
        started = time.perf_counter()
        try:
            entries = await self.client.lrange(key, 0, -1)
        except RedisError as exc:
            raise StateError(f"reading history failed: {exc}") from exc
        metrics.REDIS_SECONDS.labels("history").observe(time.perf_counter() - started)
        return _items(entries)

    async def popular_many(
        self, n: int, contexts: Sequence[tuple[int | None, str | None]]
    ) -> dict[tuple[int | None, str | None], list[tuple[str, float]]]:
        """Global plus per-context popular lists, in one round trip."""
        wanted: list[tuple[int | None, str | None]] = [(None, None), *dict.fromkeys(contexts)]
        pipe = self.client.pipeline(transaction=False)
        keys = []
        for hour, device in wanted:
            if device is not None:
                keys.append(self.keys.popularity(device=device))
            elif hour is not None:
                keys.append(self.keys.popularity(hour=hour))
            else:
                keys.append(self.keys.popularity())
            pipe.zrevrange(keys[-1], 0, n - 1, withscores=True)
        started = time.perf_counter()
        try:
            replies = await pipe.execute()
        except RedisError as exc:
            raise StateError(f"reading popularity failed: {exc}") from exc
        metrics.REDIS_SECONDS.labels("popular").observe(time.perf_counter() - started)
        return {
            ctx: [(_text(item), float(score)) for item, score in rows]
            for ctx, rows in zip(wanted, replies, strict=True)
        }

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every key holding this user's data. Returns what was removed.

        Popularity zsets are aggregates without user identity and are kept; event-id markers
        hold no user data and are kept so a redelivered event cannot bring the user back.
        """
        keys = self.keys
        try:
            members = await self.client.smembers(keys.user_sessions(user_id))
            sessions = [_text(member) for member in members]
            history_len = await self.client.llen(keys.user_history(user_id))
            counters = await self.client.hgetall(keys.user_counters(user_id))
            doomed = [
                keys.user_history(user_id),
                keys.user_counters(user_id),
                keys.user_sessions(user_id),
                keys.shown(user_id),
            ]
            for session in sessions:
                doomed += [keys.session(session), keys.shown(session)]
            deleted = int(await self.client.delete(*doomed))
        except RedisError as exc:
            raise StateError(f"forgetting user {user_id!r} failed: {exc}") from exc
        return {
            "keys_deleted": deleted,
            "sessions": len(sessions),
            "history_items": int(history_len),
            "events_counted": int(counters.get(b"events", 0)),
        }
