"""HTTP API (FastAPI): pull recommendations from the same state and ranker as the worker.

Routes: ``GET /v1/recommendations``, ``DELETE /v1/users/{user_id}``, ``GET /healthz``,
``GET /readyz``; OpenAPI docs at ``/docs``. Prometheus metrics are served by :func:`serve`
on their own port (``metrics_port + 1`` by convention for the API process).
"""

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import MaxConnectionsError, RedisError

from streamrec import metrics
from streamrec.config import Settings
from streamrec.errors import StateError
from streamrec.events import ID_MAX_LENGTH, ID_PATTERN, Recommendation
from streamrec.serving.ranker import Ranker
from streamrec.serving.service import Recommender
from streamrec.state.store import StateStore

__all__ = ["ForgetReport", "create_app"]

log = logging.getLogger(__name__)


class ForgetReport(BaseModel):
    user_id: str
    removed: dict[str, int]


def create_app(settings: Settings, ranker: Ranker) -> FastAPI:
    """The API app; Redis is connected on start-up and closed on shutdown."""
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state = StateStore.from_settings(settings.redis)
        holder["state"] = state
        holder["probe"] = probe = _probe_client(state)
        holder["recommender"] = Recommender(
            state, ranker, popular_refresh_s=settings.stream.popular_refresh_s
        )
        metrics.MODEL_INFO.info({"ranker": ranker.name, "version": ranker.version})
        try:
            yield
        finally:
            await probe.aclose()
            await state.close()

    kafka_probe = KafkaProbe(settings)
    api = FastAPI(
        title="streamrec",
        version="1",
        description="Real-time recommendations from the live event stream.",
        lifespan=lifespan,
    )

    @api.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(path, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(path).observe(time.perf_counter() - started)
        return response

    @api.exception_handler(StateError)
    async def _state_error(_: Request, exc: StateError) -> JSONResponse:
        if _pool_exhausted(exc):
            # Redis answers; this process has more requests in flight than connections.
            log.warning("state store busy: %s", exc)
            redis = settings.redis
            detail = (
                f"state store busy: Redis connection pool exhausted (no free connection "
                f"within STREAMREC_REDIS__POOL_TIMEOUT_S={redis.pool_timeout_s:g} s, all "
                f"STREAMREC_REDIS__MAX_CONNECTIONS={redis.max_connections} in use), retry later"
            )
            return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
        log.error("state unavailable: %s", exc)
        return JSONResponse({"detail": "state store unavailable, retry later"}, status_code=503)

    @api.get(
        "/v1/recommendations",
        response_model=Recommendation,
        response_model_exclude_none=True,
        responses=_UNAVAILABLE,
    )
    async def recommendations(
        session_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        user_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        k: Annotated[int, Query(ge=1, le=settings.api.max_k)] = settings.stream.top_k,
        device: Annotated[str | None, Query(max_length=64)] = None,
        hour: Annotated[int | None, Query(ge=0, le=23)] = None,
    ) -> Recommendation:
        """Top-k for a session and/or user; with neither, context-aware popular items."""
        session_id, user_id = _id("session_id", session_id), _id("user_id", user_id)
        recommender: Recommender = holder["recommender"]
        record = await recommender.recommend(
            session_id=session_id, user_id=user_id, k=k, device=device, hour=hour
        )
        metrics.RECOMMENDATIONS.labels("http", record.policy).inc()
        return record

    # :path -- ids may hold "/" (the contract allows it; a client sends it as %2F)
    @api.delete("/v1/users/{user_id:path}", response_model=ForgetReport, responses=_UNAVAILABLE)
    async def forget_user(user_id: str) -> ForgetReport:
        """Remove every trace of a user from state; reports what was removed."""
        user_id = _id("user_id", user_id) or ""
        if not user_id:
            raise HTTPException(status_code=422, detail="user_id: an id is required")
        state: StateStore = holder["state"]
        return ForgetReport(user_id=user_id, removed=await state.forget_user(user_id))

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        """Kafka and Redis are reachable (Redis asked on a connection of its own: requests
        holding every connection of the pool neither delay the answer nor make it false)."""
        redis_ok = await _redis_reachable(holder["probe"])
        kafka_ok = await kafka_probe.reachable()
        ok = redis_ok and kafka_ok
        return JSONResponse(
            {"redis": redis_ok, "kafka": kafka_ok, "status": "ready" if ok else "not ready"},
            status_code=200 if ok else 503,
        )

    return api


#: The 503 answers, for the OpenAPI document.
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Redis is unreachable, or this process's Redis connection pool is "
        "exhausted (the detail says which; retry later)"
    }
}


def _id(name: str, value: str | None) -> str | None:
    """An id as the event contract reads it (white space around it dropped, 1-256 characters,
    no control character, not only blank ones), else a 422 that says so."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > ID_MAX_LENGTH or not re.match(ID_PATTERN, value):
        raise HTTPException(
            status_code=422,
            detail=f"{name}: an id has 1-{ID_MAX_LENGTH} characters, at least one neither white "
            "space nor zero-width, and no control character",
        )
    return value


def _pool_exhausted(exc: BaseException) -> bool:
    """``exc`` was caused by no free connection in the pool (not by Redis failing)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, MaxConnectionsError):
            return True
        cause = cause.__cause__
    return False


def _probe_client(state: StateStore) -> aioredis.Redis:
    """A client of one connection for /readyz, with the state client's connection options
    (address, credentials, TLS, timeouts, health checks): it never waits behind requests."""
    pool = state.client.connection_pool
    probe_pool = aioredis.BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=1,  # concurrent probes take turns; a PING is short
        timeout=state.settings.pool_timeout_s,
        **pool.connection_kwargs,
    )
    return aioredis.Redis.from_pool(probe_pool)


async def _redis_reachable(probe: aioredis.Redis) -> bool:
    try:
        return bool(await probe.ping())
    except RedisError:
        return False


class KafkaProbe:
    """Whether Kafka answers, asked at most once per ``ttl_s``: probes that come together (a
    load balancer's, several replicas') share one check instead of each waiting up to
    ``timeout_s`` in the thread pool when the broker is down."""

    def __init__(self, settings: Settings, *, ttl_s: float = 1.0, timeout_s: float = 3.0) -> None:
        self.settings = settings
        self.ttl_s, self.timeout_s = ttl_s, timeout_s
        self.checks = 0
        self._answer: tuple[float, bool] | None = None  # (monotonic time, reachable)
        self._lock = asyncio.Lock()

    async def reachable(self) -> bool:
        async with self._lock:
            if self._answer is None or time.monotonic() - self._answer[0] > self.ttl_s:
                self.checks += 1
                ok = await asyncio.to_thread(_kafka_reachable, self.settings, self.timeout_s)
                self._answer = (time.monotonic(), ok)
            return self._answer[1]


def _kafka_reachable(settings: Settings, timeout_s: float = 3.0) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        metadata = AdminClient(settings.kafka.librdkafka()).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return bool(metadata.brokers)
