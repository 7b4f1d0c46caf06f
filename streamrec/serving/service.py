"""Turning state into ranked lists: the one code path shared by the stream worker and HTTP API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamrec import metrics
from streamrec.events import OutgoingRecommendation, Recommendation
from streamrec.serving.ranker import Decision, History, RankContext, Ranked, Ranker
from streamrec.state.store import StateStore

__all__ = ["Recommender", "Request"]

#: Most popular items fetched per context, beyond k, to leave room after excluding seen items.
_POPULAR_SLACK = 100

Context = tuple[int | None, str | None]  # (hour of day, device)


@dataclass(frozen=True, slots=True)
class Request:
    history: History
    hour: int | None = None
    device: str | None = None
    event_id: str | None = None
    event_time: float | None = None


class Recommender:
    """Fetch context popularity (one round trip), rank a batch, build recommendation records."""

    def __init__(
        self,
        state: StateStore,
        ranker: Ranker,
        *,
        policy: str | None = None,
        offload: bool | None = None,
        popular_refresh_s: float = 1.0,
    ) -> None:
        self.state = state
        self.ranker = ranker
        #: ``policy`` label of the records: the ranker's ``policy_name`` if it has one.
        self.policy = policy or str(getattr(ranker, "policy_name", "greedy"))
        self.popular_refresh_s = popular_refresh_s
        # (hour, device) -> (fetched at, list): popularity moves slowly (half-life of hours), so
        # a snapshot at most `popular_refresh_s` old saves a Redis read per batch.
        self._popular: dict[Context, tuple[float, list[tuple[str, float]]]] = {}
        # context -> (its list, the overall list, the two blended): reused while both snapshots
        # are the same objects, so a batch does not blend the same lists again.
        self._blends: dict[Context, tuple[list[tuple[str, float]], ...]] = {}
        # Model rankers run in a thread so the event loop keeps serving Kafka/HTTP meanwhile.
        self.offload = ranker.name != "popularity" if offload is None else offload

    async def rank(self, requests: Sequence[Request], k: int) -> list[Ranked]:
        if not requests:
            return []
        longest = max(len(request.history.excluded()) for request in requests)
        contexts = [(r.hour, r.device) for r in requests]
        # A device's list is filled from its hour's, then from the overall list: a device
        # with few or no events yet still gets the hour's popular items.
        hours: list[Context] = [
            (hour, None) for hour, device in contexts if device is not None and hour is not None
        ]
        popular = await self.popular_lists(contexts + hours, k + longest)
        # One context object per distinct (hour, device) in the batch, shared by its requests.
        shared: dict[tuple[int | None, str | None], RankContext] = {}
        for hour, device in dict.fromkeys(contexts):
            fallback = popular[(None, None)]
            if device is not None and hour is not None:
                fallback = self._blended((hour, None), popular[(hour, None)], fallback)
            blended = self._blended((hour, device), popular[(hour, device)], fallback)
            shared[(hour, device)] = RankContext(hour=hour, device=device, popular=blended)
        rank_contexts = [shared[key] for key in contexts]
        histories = [r.history for r in requests]
        started = time.perf_counter()
        if self.offload:
            ranked = await asyncio.to_thread(self.ranker.rank, histories, rank_contexts, k)
        else:
            ranked = self.ranker.rank(histories, rank_contexts, k)
        metrics.INFERENCE_SECONDS.labels(self.ranker.name).observe(time.perf_counter() - started)
        return ranked

    async def popular_lists(
        self, contexts: list[tuple[int | None, str | None]], fill: int
    ) -> dict[tuple[int | None, str | None], list[tuple[str, float]]]:
        """The overall list and each context's, in at most one round trip.

        ``fill`` is what a request needs to be filled: k plus the items it excludes; lists
        are read with room to spare. They come from the snapshot while younger than
        ``popular_refresh_s`` and either full or backed by an overall list that can fill a
        request alone. A short list holds its context's whole catalogue, which is still
        growing (a new or small deployment): it is read again on every batch only while
        serving it could leave a request unfilled."""
        now = time.monotonic()
        overall: Context = (None, None)
        needed = [overall, *dict.fromkeys(contexts)]
        wanted = fill + _POPULAR_SLACK
        size = -(-wanted // 128) * 128  # round up so small changes in `wanted` reuse the cache
        cached = self._popular.get(overall)
        fills = (
            cached is not None
            and now - cached[0] <= self.popular_refresh_s
            and len(cached[1]) >= fill
        )
        stale = [ctx for ctx in needed if not self._fresh(ctx, now, size, fills)]
        if stale:
            fresh = await self.state.popular_many(size, stale)
            for ctx, rows in fresh.items():
                self._popular[ctx] = (now, rows)
        return {ctx: self._popular[ctx][1] for ctx in needed}

    def _fresh(self, ctx: Context, now: float, size: int, overall_fills: bool) -> bool:
        cached = self._popular.get(ctx)
        if cached is None:
            return False
        fetched_at, rows = cached
        young = now - fetched_at <= self.popular_refresh_s
        return young and (len(rows) >= size or overall_fills)

    def _blended(
        self,
        ctx: Context,
        contextual: list[tuple[str, float]],
        overall: list[tuple[str, float]],
    ) -> list[tuple[str, float]]:
        cached = self._blends.get(ctx)
        if cached is not None and cached[0] is contextual and cached[1] is overall:
            return cached[2]
        blended = _blend(contextual, overall)
        self._blends[ctx] = (contextual, overall, blended)
        return blended

    def record(self, request: Request, ranked: Ranked) -> OutgoingRecommendation:
        """The record of ``ranked`` for ``request`` (published as is by the worker; the HTTP
        API answers with its validated model)."""
        decision = ranked.decision
        return OutgoingRecommendation(
            user_id=request.history.user_id,
            session_id=request.history.session_id,
            event_id=request.event_id,
            item_ids=ranked.item_ids,
            scores=ranked.scores,
            model_version=ranked.answered_by or self.ranker.version,
            policy=self.policy,
            propensities=ranked.propensities,
            explanations=ranked.explanations,
            event_time=request.event_time,
            decision=_decision(decision) if decision is not None else None,
        )

    async def recommend(
        self,
        *,
        session_id: str | None,
        user_id: str | None,
        k: int,
        device: str | None = None,
        hour: int | None = None,
    ) -> Recommendation:
        """Pull path (HTTP): read the history, rank, return the record."""
        items = await self.state.history(session_id=session_id, user_id=user_id)
        if hour is None:
            hour = datetime.now(UTC).hour
        request = Request(History(items, user_id=user_id, session_id=session_id), hour, device)
        ranked = (await self.rank([request], k))[0]
        return self.record(request, ranked).to_model()


def _decision(decision: Decision) -> dict[str, Any]:
    """As the record logs it (plain Python numbers: a policy may hand over numpy ones)."""
    return {
        "candidates": [[float(value) for value in row] for row in decision.candidates],
        "context": [float(value) for value in decision.context],
        "n_slots": int(decision.n_slots),
        "action": int(decision.action),
        "propensity": float(decision.propensity),
    }


def _blend(
    contextual: list[tuple[str, float]], overall: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Context's popular items first, then the overall list (deduplicated) to fill up, its
    scores shifted below the context's last so the list's scores never rise (an overall
    count sums every context, so it is larger than a context's own)."""
    if contextual is overall:
        return overall
    seen = {item for item, _ in contextual}
    fill = [(item, score) for item, score in overall if item not in seen]
    if not contextual or not fill:
        return contextual + fill
    shift = max(0.0, fill[0][1] - contextual[-1][1])
    return contextual + [(item, score - shift) for item, score in fill]
