"""Session and user state in Redis: one round trip per micro-batch, idempotent by event_id.

:meth:`StateStore.apply` runs one Lua script call per micro-batch (one round trip), the events
passed as one JSON argument: packing a pipeline of per-event calls, 16 arguments each, took ~20 %
of the worker's handling time in a profile. The script applies the events in order; for each it
claims the event id with ``SET NX`` and only then updates the session, the user history and
counters, the decayed popularity, and looks up whether the item was recommended to this session
(reward attribution). A redelivered event (same id, within
``dedup_ttl_s``) therefore changes nothing. List pushes, counters, set members and TTLs are
gathered per key and written once per key at the end of the call (a burst of one user is one
LPUSH, LTRIM and EXPIRE, not one of each per event: ~25 % less script time per event); the
script is atomic, so the state is the same as event by event. The script returns the
histories after the update, so ranking needs no second read.

The same call carries the writes *deferred* since the previous one, ahead of the batch's
events: the pages the previous batch showed (:meth:`StateStore.defer_shown`, so a click in
this batch is attributed to them) and the markers of delivered outputs
(:meth:`StateStore.defer_confirm`, below). Under load a batch costs one round trip in all;
when no batch follows, :meth:`StateStore.flush` writes them (the worker flushes a batch's pages
before it acknowledges its input, and a timer flushes any write left ``FLUSH_AFTER_S``).

The event-id marker also records whether the event's *outputs* (recommendation, reward) were
delivered: ``1:<instance>`` = applied by that process (one id per :class:`StateStore`), ``d`` =
outputs acknowledged by the broker (set by :meth:`StateStore.defer_confirm` once the worker's
output batch is delivered). A redelivered event whose marker is still ``1:`` of *another* instance —
a worker died (or lost the partition) between applying it and delivering its outputs —
changes no state but is reported as :attr:`Applied.reemit`, so its outputs are produced again:
state exactly once, outputs at least once, nothing lost. A duplicate of an event this process
applied and is still delivering is a plain duplicate -- except when the batch is retried after
a failed call (``apply(..., replay=True)``): that call may have applied it without the reply
arriving, and its outputs were never produced, so they are produced now.

Trade-offs: keys of one event span hash slots, so this targets a single Redis (or a primary with
replicas / Sentinel), not Redis Cluster. The dedup window is bounded (``dedup_ttl_s``); an event
redelivered after that would count again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    MaxConnectionsError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from streamrec import metrics
from streamrec.config import RedisSettings
from streamrec.errors import ConfigError, StateError
from streamrec.state.keys import Keys, shown_scope

__all__ = [
    "FLUSH_AFTER_S",
    "POPULARITY_WEIGHTS",
    "Applied",
    "Page",
    "Shown",
    "StateStore",
    "redis_address",
]

log = logging.getLogger(__name__)

#: Longest a deferred write waits for an :meth:`StateStore.apply` to carry it (an idle stream).
FLUSH_AFTER_S = 0.2

#: How much one event of each type adds to an item's popularity.
POPULARITY_WEIGHTS = {"view": 1.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0, "rating": 1.0}

# Settings are baked into the script text (one script per configuration) so each call carries
# only what varies per event: fewer arguments to pack and send on the hot path.
_APPLY = """
-- ARGV[4]: '1' when this batch is retried after a failed call, which may have applied it:
-- this process's own unconfirmed markers then also mean "emit its outputs again"
local replay = ARGV[4] == '1'
-- ARGV[5]: latest event time popularity takes (the worker's clock plus the allowed skew): a
-- client whose clock runs ahead cannot pin its items to the top for as long as it is ahead
local latest_ts = tonumber(ARGV[5])
-- The list pushes, counters, set members and TTLs of the batch are gathered per key and made
-- once per key at the end (a burst of one user is one LPUSH, LTRIM and EXPIRE, not one of each
-- per event); the script is atomic, so no client sees the difference.
local order, pending = {{}}, {{}}
local function later(key, ttl)
  local p = pending[key]
  if not p then
    p = {{ttl = ttl}}
    pending[key] = p
    order[#order + 1] = key
  end
  return p
end
local function push(key, value, len, ttl)
  local p = later(key, ttl)
  if not p.push then p.push, p.len = {{}}, len end
  p.push[#p.push + 1] = value
end
local function incr(key, field, ttl)
  local p = later(key, ttl)
  if not p.incr then p.incr = {{}} end
  p.incr[field] = (p.incr[field] or 0) + 1
end
local function add(key, member, ttl)
  local p = later(key, ttl)
  if not p.add then p.add = {{}} end
  p.add[member] = true
end
local reads = {{}}  -- result index -> user history key, read once the writes are made
local function apply_one(index, KEYS, ARGV)
-- KEYS: 1 dedup, 2 session ('' when none), 3 user history, 4 user counters, 5 user sessions,
--       6 pop, 7 pop by hour, 8 pop by device ('' when none), 9 shown-to-this-session
-- ARGV: 1 item, 2 type, 3 ts, 4 popularity weight, 5 session_id, 6 attribute (0/1),
--       7 return the user's history (0/1: the user's last event in the batch)
if ARGV[7] == '1' then reads[index] = KEYS[3] end
if not redis.call('SET', KEYS[1], '1:{instance}', 'NX', 'EX', {dedup_ttl}) then
  local status = 0
  local shown = false
  local marker = redis.call('GET', KEYS[1])
  -- Applied by another (dead or former) process and never confirmed: emit its outputs again.
  -- Applied by this process: its outputs are on their way (or this process crashes and the
  -- next one, with a new instance id, re-emits them).
  if marker ~= 'd' and (marker ~= '1:{instance}' or replay) then
    status = 2
    if ARGV[6] == '1' then shown = redis.call('HGET', KEYS[9], ARGV[1]) end
  end
  return {{status, false, shown}}
end
local ts = tonumber(ARGV[3])
if KEYS[2] ~= '' then
  push(KEYS[2], ARGV[1] .. '\t' .. ARGV[2] .. '\t' .. ARGV[3], {session_len}, {session_ttl})
  add(KEYS[5], ARGV[5], {user_ttl})
end
push(KEYS[3], ARGV[1], {user_len}, {user_ttl})
incr(KEYS[4], 'events', {user_ttl})
incr(KEYS[4], ARGV[2], {user_ttl})
local weight = tonumber(ARGV[4])
local now = math.min(ts, latest_ts) / {half_life}
local log2 = math.log(2)
local function bump(key)
  local old = redis.call('ZSCORE', key, ARGV[1])
  local score
  if old then
    -- log2(2^old + 2^new) without overflow, whichever of the two is newer (late events too)
    local a, b = tonumber(old), now + math.log(weight) / log2
    if a < b then a, b = b, a end
    score = a + math.log(1 + 2 ^ (b - a)) / log2
  else
    score = now + math.log(weight) / log2
  end
  redis.call('ZADD', key, score, ARGV[1])
end
bump(KEYS[6])
bump(KEYS[7])
if KEYS[8] ~= '' then bump(KEYS[8]) end
local shown = false
if ARGV[6] == '1' then
  shown = redis.call('HGET', KEYS[9], ARGV[1])
end
return {{1, false, shown}}
end
-- unpack is bounded: up to 1000 arguments per command
local function chunked(command, key, values)
  for start = 1, #values, 1000 do
    redis.call(command, key, unpack(values, start, math.min(start + 999, #values)))
  end
end
-- ARGV[2]: deferred writes of earlier batches, before this batch's events (a click in this
-- batch is attributed to a page an earlier batch showed): pages shown, as a JSON array of
-- [shown key, record tail, first position, [item, ...], [propensity or false, ...]];
-- the field of an item is the JSON record attribution reads back, and a later page wins.
if ARGV[2] ~= '' then
  for _, page in ipairs(cjson.decode(ARGV[2])) do
    local key, tail, first, items, props = page[1], page[2], page[3], page[4], page[5]
    local fields = {{}}
    for index, item in ipairs(items) do
      local propensity = props[index]
      if propensity == false then propensity = 'null' end
      fields[#fields + 1] = item
      fields[#fields + 1] = '{{"position": ' .. (first + index - 1) .. ', "propensity": '
        .. propensity .. ', ' .. tail
    end
    chunked('HSET', key, fields)
    redis.call('EXPIRE', key, {shown_ttl})
  end
end
-- ARGV[3]: deferred writes: event markers whose outputs the broker acknowledged
if ARGV[3] ~= '' then
  for _, key in ipairs(cjson.decode(ARGV[3])) do
    redis.call('SET', key, 'd', 'XX', 'KEEPTTL')
  end
end
-- ARGV[1]: the batch as a JSON array of events, each 9 keys then 7 arguments (above)
local results = {{}}
for index, row in ipairs(cjson.decode(ARGV[1])) do
  results[index] = apply_one(index, {{unpack(row, 1, 9)}}, {{unpack(row, 10, 16)}})
end
for _, key in ipairs(order) do
  local p = pending[key]
  if p.push then
    chunked('LPUSH', key, p.push)  -- in event order: the newest ends up first
    redis.call('LTRIM', key, 0, p.len - 1)
  end
  if p.incr then
    for name, count in pairs(p.incr) do redis.call('HINCRBY', key, name, count) end
  end
  if p.add then
    local names = {{}}
    for name in pairs(p.add) do names[#names + 1] = name end
    chunked('SADD', key, names)
  end
  redis.call('EXPIRE', key, p.ttl)
end
for index, key in pairs(reads) do
  results[index][2] = redis.call('LRANGE', key, 0, -1)
end
return results
"""


# ACL refusals Redis answers as plain errors inside a script (7.0: "The user executing the
# script can't access at least one of the keys", "... can't run this command").
_REFUSED = re.compile(r"NOPERM|no permissions|can't access|can't run", re.IGNORECASE)

# What the start-up check runs (StateStore.check_access): a read and a write under the prefix,
# with commands state writes use (ZSCORE; SET ... XX, which writes nothing: the key never exists).
_ACCESS_CHECK = """
redis.call('ZSCORE', ARGV[1], ARGV[2])
redis.call('SET', ARGV[2], '1', 'XX')
return 1
"""


def redis_address(url: str) -> str:
    """``host:port/db`` (or the socket path) of a Redis URL, without user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        db = parse_qs(parts.query).get("db", [""])[0]
        return parts.path + (f"?db={db}" if db else "")
    try:
        port = parts.port or 6379
    except ValueError:
        port = None
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    db = parts.path.strip("/") or parse_qs(parts.query).get("db", [""])[0]
    return f"{host}:{port}" + (f"/{db}" if db else "") if port else host


def _script(settings: RedisSettings, instance: str) -> str:
    return _APPLY.format(
        instance=instance,
        dedup_ttl=int(settings.dedup_ttl_s),
        session_len=int(settings.session_len),
        session_ttl=int(settings.session_ttl_s),
        user_ttl=int(settings.user_ttl_s),
        user_len=int(settings.user_history_len),
        half_life=repr(float(settings.popularity_half_life_s)),
        shown_ttl=max(60, int(settings.session_ttl_s)),
    )


@dataclass(frozen=True, slots=True)
class Applied:
    """Outcome of applying one event."""

    applied: bool  # False: already applied before (duplicate)
    user_items: list[str]  # the user's history after this event, oldest first
    shown: dict[str, Any] | None  # the recommendation that showed this item, if any
    #: Applied before, but its outputs were never confirmed delivered: produce them again.
    reemit: bool = False


class Shown(NamedTuple):
    """One item shown in a recommendation, remembered for reward attribution."""

    item_id: str
    rec_id: str
    position: int
    propensity: float | None
    policy: str
    model_version: str
    event_time: float


class Page(NamedTuple):
    """A recommendation as shown: its items at positions ``first_position``, +1, ... (one
    tuple per list, not per item: the worker remembers every list it publishes)."""

    rec_id: str
    item_ids: Sequence[str]
    propensities: Sequence[float] | None
    policy: str
    model_version: str
    event_time: float
    first_position: int = 0


def _page_row(key: str, page: Page, tails: dict[tuple[str, str, str, float], str]) -> list[Any]:
    """``page`` as the script reads it: the record's own fields serialised once (as the tail
    of each item's JSON object), the item fields built in the script."""
    tail_key = (page.rec_id, page.policy, page.model_version, page.event_time)
    tail = tails.get(tail_key)
    if tail is None:
        tail = tails[tail_key] = orjson.dumps(
            {
                "rec_id": page.rec_id,
                "policy": page.policy,
                "model_version": page.model_version,
                "event_time": page.event_time,
            }
        )[1:].decode()
    props = page.propensities
    propensities = (
        [repr(float(p)) for p in props] if props is not None else [False] * len(page.item_ids)
    )
    return [key, tail, int(page.first_position), list(page.item_ids), propensities]


@dataclass(slots=True)
class _Deferred:
    """Writes waiting for the next state round trip (see :meth:`StateStore.defer_shown`)."""

    pages: list[list[Any]] = field(default_factory=list)
    confirms: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    since: float = 0.0  # monotonic time of the oldest write

    def __bool__(self) -> bool:
        return bool(self.pages or self.confirms)

    def then(self, later: _Deferred) -> _Deferred:
        """These writes, then ``later``'s (a failed call's writes go back in front)."""
        return _Deferred(
            self.pages + later.pages,
            self.confirms + later.confirms,
            self.waiters + later.waiters,
            self.since if self else later.since,
        )

    def settle(self, error: BaseException | None = None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)


def _dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (orjson: the stdlib encoder was ~3 % of a busy worker's time)."""
    return orjson.dumps(value)


def _histories(events: Sequence[Any], replies: Sequence[Any]) -> list[list[str]]:
    """Each event's user history (oldest first) right after it was applied.

    The last event of each user in the batch carries the history as Redis returned it; an
    earlier event's history is that list without the user's items applied after it. (Those
    views can hold up to that many fewer of the oldest items than the bounded list did.)
    """
    out: list[list[str]] = [[] for _ in events]
    current: dict[str, list[str]] = {}
    later: dict[str, int] = {}
    for index in range(len(events) - 1, -1, -1):
        user = events[index].user_id
        if user not in current:
            current[user] = list(reversed(replies[index][1] or []))
            later[user] = 0
        full = current[user]
        out[index] = full[: len(full) - later[user]] if later[user] else full
        if replies[index][0] == 1:
            later[user] += 1
    return out


class _WaitingPool(aioredis.BlockingConnectionPool):
    """The state client's pool: a call waits up to ``timeout`` seconds for a free connection
    and then raises :class:`MaxConnectionsError` (the pool is exhausted, Redis may be fine),
    not the plain ``ConnectionError`` redis-py raises for it, which reads as Redis down."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            # redis-py raises ConnectionError("No connection available.") from the wait's
            # TimeoutError; a failure to connect to Redis has no TimeoutError cause.
            if type(exc) is not RedisConnectionError or not isinstance(exc.__cause__, TimeoutError):
                raise
            raise MaxConnectionsError(
                f"connection pool exhausted: no free Redis connection within {self.timeout} s, "
                f"all {self.max_connections} in use (STREAMREC_REDIS__MAX_CONNECTIONS, "
                "STREAMREC_REDIS__POOL_TIMEOUT_S)"
            ) from exc


class StateStore:
    """Async Redis state. Create with :meth:`from_settings`; close with :meth:`close`."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        #: Where Redis is, for messages (the URL without its credentials).
        self.address = redis_address(settings.url)
        self.keys = Keys(settings.key_prefix)
        #: Marks the events this process applied (``1:<instance>``) until they are confirmed.
        self.instance = uuid.uuid4().hex[:16]
        self._script = _script(settings, self.instance)
        self._max_future_s = float(settings.popularity_max_future_s)
        self._shas: dict[str, str] = {}  # script text -> its digest, once loaded
        self._deferred = _Deferred()  # carried by the next apply (or flush)
        self._writing = asyncio.Lock()  # state writes reach Redis in the order they are taken
        self._flush_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> StateStore:
        # A bounded pool that makes a call wait for a free connection: redis-py's default
        # pool fails at once ("Too many connections") past 100 calls in flight.
        pool = _WaitingPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            decode_responses=True,  # decoded by hiredis, in C
        )
        return cls(aioredis.Redis.from_pool(pool), settings)  # the client closes its pool

    async def close(self) -> None:
        """Write what is deferred (best effort), then close the connections."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        try:
            await self.flush()
        except StateError as exc:
            log.warning("closing with deferred writes not written: %s", exc)
            self._deferred.settle(exc)
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def check_access(self) -> str | None:
        """Ask Redis once: None if it takes the worker's reads and writes, else why not yet
        (unreachable, loading, a read-only replica: it may change).

        Raises:
            ConfigError: Redis answered but refuses these credentials (a wrong password or
                user, no password where one is needed, an ACL without the commands or keys
                state uses): retrying cannot help.
        """
        needs = (
            "the user's ACL needs SCRIPT LOAD, EVALSHA and reading and writing keys "
            f"{self.settings.key_prefix}:*"
        )
        try:
            await self.client.ping()
            # a script by its digest, as state writes are, reading and writing a key of ours
            await self._evalsha(_ACCESS_CHECK, 0, self.keys.popularity(), self.keys.probe())
        except (AuthenticationError, NoPermissionError) as exc:
            raise ConfigError(
                f"Redis {self.address} refused streamrec: {str(exc).rstrip('. ')}. Check the "
                "user and password in STREAMREC_REDIS__URL (redis://user:password@host:port/db); "
                f"{needs}"
            ) from exc
        except ResponseError as exc:
            if _REFUSED.search(str(exc)):
                raise ConfigError(
                    f"Redis {self.address} refused streamrec: {str(exc).rstrip('. ')}; {needs}"
                ) from exc
            return f"{type(exc).__name__}: {exc}"  # READONLY (a replica), LOADING, OOM, ...
        except RedisError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _evalsha(self, script: str, numkeys: int, *args: Any) -> Any:
        """Run ``script`` by its digest: loaded on first use, and again when Redis lost it
        (restarted, or its script cache flushed)."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = str(await self.client.script_load(script))
        try:
            return await self.client.evalsha(sha, numkeys, *args)
        except NoScriptError:
            sha = self._shas[script] = str(await self.client.script_load(script))
            return await self.client.evalsha(sha, numkeys, *args)

    async def apply(
        self,
        events: Sequence[Any],
        *,
        attribute: set[str],
        replay: bool = False,
        encoded: bytes | None = None,
    ) -> list[Applied]:
        """Apply a micro-batch of events in one round trip; see the module docstring. The
        writes deferred so far go first, in the same call.

        ``replay``: the batch is retried after a call that failed and may have applied it;
        events this process applied without confirming them are then reported as
        :attr:`Applied.reemit` (their outputs were never produced). ``encoded``: the
        batch's :meth:`encode_batch`, made ahead with the same ``attribute``."""
        if not events:
            return []
        payload = encoded if encoded is not None else self.encode_batch(events, attribute=attribute)
        replies = await self._write("apply", payload, replay, f"applying {len(events)} events")
        histories = _histories(events, replies)
        out = []
        for reply, history in zip(replies, histories, strict=True):
            applied, reemit = reply[0] == 1, reply[0] == 2
            shown = orjson.loads(reply[2]) if (applied or reemit) and reply[2] else None
            out.append(Applied(applied, history if applied or reemit else [], shown, reemit))
        return out

    def encode_batch(self, events: Sequence[Any], *, attribute: set[str]) -> bytes:
        """The script's argument for applying ``events`` (what :meth:`apply` sends). The
        worker encodes a batch ahead, while the previous batch's call is in flight."""
        keys = self.keys
        # Only the last event of each user in the batch reads the history back; earlier ones
        # are derived from it (see _histories), so a burst of one user costs one LRANGE.
        last_of_user = {event.user_id: index for index, event in enumerate(events)}
        rows = []
        for index, event in enumerate(events):
            ts = event.ts
            device = event.context.device if event.context and event.context.device else None
            kind = event.type.value
            scope = shown_scope(event.session_id, event.user_id)
            rows.append(
                (
                    keys.event(event.event_id),
                    keys.session(event.session_id) if event.session_id else "",
                    keys.user_history(event.user_id),
                    keys.user_counters(event.user_id),
                    keys.user_sessions(event.user_id),
                    keys.popularity(),
                    keys.popularity(hour=time.gmtime(ts).tm_hour),
                    keys.popularity(device=device) if device else "",
                    keys.shown(scope),
                    event.item_id,
                    kind,
                    repr(float(ts)),
                    repr(float(POPULARITY_WEIGHTS.get(kind, 1.0))),
                    event.session_id or "",
                    "1" if kind in attribute else "0",
                    "1" if last_of_user[event.user_id] == index else "0",
                )
            )
        # One script call for the batch, its events as one JSON argument (module docstring).
        return _dumps(rows)

    async def _write(self, operation: str, events: bytes, replay: bool, what: str) -> Any:
        """One call of the state script: the deferred writes, then ``events`` (a JSON array).
        Writes are taken and sent under a lock, so they reach Redis in the order they were
        made; a failed call puts its deferred writes back in front (they are idempotent)."""
        async with self._writing:
            carried, self._deferred = self._deferred, _Deferred()
            pages = _dumps(carried.pages) if carried.pages else b""
            confirms = _dumps(carried.confirms) if carried.confirms else b""
            started = time.perf_counter()
            try:
                reply = await self._evalsha(
                    self._script,
                    0,
                    events,
                    pages,
                    confirms,
                    "1" if replay else "0",
                    repr(time.time() + self._max_future_s),
                )
            except RedisError as exc:
                self._deferred = carried.then(self._deferred)
                raise StateError(f"{what} failed on Redis {self.address}: {exc}") from exc
            except BaseException:  # cancelled mid-call: the writes may not have been made
                self._deferred = carried.then(self._deferred)
                raise
            metrics.REDIS_SECONDS.labels(operation).observe(time.perf_counter() - started)
        carried.settle()
        return reply

    def defer_shown(self, by_scope: dict[str, list[Page]]) -> asyncio.Future[None]:
        """Remember what was shown, per session (or user), with the next state call: the next
        :meth:`apply` (before its events, so a click in that batch is attributed) or
        :meth:`flush`. Returns a future that is done once the pages are in Redis (see
        :meth:`settle`)."""
        tails: dict[tuple[str, str, str, float], str] = {}  # one JSON tail per record
        pages = [
            _page_row(self.keys.shown(scope), page, tails)
            for scope, scope_pages in by_scope.items()
            for page in scope_pages
        ]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not pages:
            waiter.set_result(None)
            return waiter
        self._defer(pages=pages, waiter=waiter)
        return waiter

    def defer_confirm(self, event_ids: Sequence[str]) -> None:
        """Mark these applied events' outputs as delivered (see the module docstring), with
        the next state call, or at most ``FLUSH_AFTER_S`` from now. Markers that expired or
        were never set are left alone. Best effort: a mark that is lost only lets a
        redelivery produce the outputs again."""
        if event_ids:
            self._defer(confirms=[self.keys.event(event_id) for event_id in event_ids])

    def _defer(
        self,
        *,
        pages: list[list[Any]] | None = None,
        confirms: list[str] | None = None,
        waiter: asyncio.Future[None] | None = None,
    ) -> None:
        deferred = self._deferred
        if not deferred:
            deferred.since = time.monotonic()
        deferred.pages += pages or []
        deferred.confirms += confirms or []
        if waiter is not None:
            deferred.waiters.append(waiter)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                FLUSH_AFTER_S, self._on_flush_timer
            )

    def _on_flush_timer(self) -> None:
        """Write what no apply carried within ``FLUSH_AFTER_S`` (an idle stream)."""
        self._flush_timer = None
        if not self._deferred:
            return
        age = time.monotonic() - self._deferred.since
        if age < FLUSH_AFTER_S:  # newer writes than the timer's: wait for them
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(FLUSH_AFTER_S - age, self._on_flush_timer)
            return
        task = asyncio.ensure_future(self._flush_quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except StateError as exc:  # kept; the next call carries them, or the timer again
            log.warning("deferred state writes failed (kept for the next call): %s", exc)
            if self._deferred and self._flush_timer is None:
                loop = asyncio.get_running_loop()
                self._flush_timer = loop.call_later(FLUSH_AFTER_S, self._on_flush_timer)

    async def flush(self) -> None:
        """Write what is deferred now, in one round trip (nothing when nothing is)."""
        if self._deferred:
            await self._write("flush", b"[]", False, "writing deferred state")

    async def settle(self, written: asyncio.Future[None], *, within: float = 0.0) -> None:
        """Return once ``written`` (from :meth:`defer_shown`) is in Redis: at once if a call
        already carried it, after that call if one is carrying it; else it waits up to
        ``within`` seconds for an :meth:`apply` to carry it, and then flushes it.

        Raises:
            StateError: the flush failed (the writes stay deferred; call again to retry).
        """
        if within > 0 and not written.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(written), within)
        if not written.done() and any(w is written for w in self._deferred.waiters):
            await self.flush()
        await written

    async def confirm(self, event_ids: Sequence[str]) -> None:
        """:meth:`defer_confirm`, written now."""
        self.defer_confirm(event_ids)
        await self.flush()

    async def remember_shown(self, scope: str, shown: Sequence[Shown]) -> None:
        """Remember what was shown to a session (or user) for reward attribution, now."""
        await self.remember_shown_many({scope: list(shown)})

    async def remember_shown_many(self, by_scope: dict[str, list[Shown]]) -> None:
        """:meth:`defer_shown` of single items (each at its own position), written now."""
        pages = {
            scope: [
                Page(
                    item.rec_id,
                    [item.item_id],
                    None if item.propensity is None else [item.propensity],
                    item.policy,
                    item.model_version,
                    item.event_time,
                    item.position,
                )
                for item in shown
            ]
            for scope, shown in by_scope.items()
        }
        await self.settle(self.defer_shown(pages))

    async def history(self, *, session_id: str | None, user_id: str | None) -> list[str]:
        """Items of the user and of the session, oldest first, in one round trip: the user's
        history, then the session's items it does not hold (a session is normally its user's,
        so already in it; not when the caller pairs a session with another user id)."""
        keys = [self.keys.user_history(user_id)] if user_id else []
        if session_id:
            keys.append(self.keys.session(session_id))
        if not keys:
            return []
        started = time.perf_counter()
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.lrange(key, 0, -1)
            replies = await pipe.execute()
        except RedisError as exc:
            raise StateError(f"reading history failed on Redis {self.address}: {exc}") from exc
        metrics.REDIS_SECONDS.labels("history").observe(time.perf_counter() - started)
        items = [str(entry) for entry in reversed(replies[0])] if user_id else []
        if session_id:  # session entries are "item<TAB>type<TAB>ts", newest first
            held = set(items)
            session = (str(entry).split("\t", 1)[0] for entry in reversed(replies[-1]))
            items += [item for item in session if item not in held]
        return items

    async def popular_many(
        self, n: int, contexts: Sequence[tuple[int | None, str | None]]
    ) -> dict[tuple[int | None, str | None], list[tuple[str, float]]]:
        """Top-n popular items per (hour, device) context, in one round trip.

        ``(None, None)`` is the overall list; a device takes precedence over an hour.
        """
        wanted = list(dict.fromkeys(contexts))
        pipe = self.client.pipeline(transaction=False)
        for hour, device in wanted:
            if device is not None:
                key = self.keys.popularity(device=device)
            elif hour is not None:
                key = self.keys.popularity(hour=hour)
            else:
                key = self.keys.popularity()
            pipe.zrevrange(key, 0, n - 1, withscores=True)
        started = time.perf_counter()
        try:
            replies = await pipe.execute()
        except RedisError as exc:
            raise StateError(f"reading popularity failed on Redis {self.address}: {exc}") from exc
        metrics.REDIS_SECONDS.labels("popular").observe(time.perf_counter() - started)
        return {
            ctx: [(item, float(score)) for item, score in rows]
            for ctx, rows in zip(wanted, replies, strict=True)
        }

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every key holding this user's data. Returns what was removed.

        Popularity zsets are aggregates without user identity and are kept; event-id markers
        hold no user data and are kept so a redelivered event cannot bring the user back.
        Shown pages of the user's sessions written under the old layout (``r:<session>``) go
        too; an old sessionless page (``r:<user>``) may be another session's and is left to
        expire with its TTL.
        """
        keys = self.keys
        try:
            members = await self.client.smembers(keys.user_sessions(user_id))
            sessions = [str(member) for member in members]
            history_len = await self.client.llen(keys.user_history(user_id))
            counters = await self.client.hgetall(keys.user_counters(user_id))
            doomed = [
                keys.user_history(user_id),
                keys.user_counters(user_id),
                keys.user_sessions(user_id),
                keys.shown(shown_scope(None, user_id)),
            ]
            for session in sessions:
                doomed += [keys.session(session), keys.shown(shown_scope(session, user_id))]
                if not session.startswith(("s:", "u:")):  # else a new-layout key's name
                    doomed.append(keys.shown(session))  # the layout before shown_scope
            deleted = int(await self.client.delete(*doomed))
        except RedisError as exc:
            raise StateError(
                f"forgetting user {user_id!r} failed on Redis {self.address}: {exc}"
            ) from exc
        return {
            "keys_deleted": deleted,
            "sessions": len(sessions),
            "history_items": int(history_len),
            "events_counted": int(counters.get("events", 0)),
        }
