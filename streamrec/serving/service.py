"""Turning state into ranked lists: the one code path shared by the stream worker and HTTP API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from streamrec import metrics
from streamrec.events import Recommendation, RecommendedItem
from streamrec.serving.ranker import History, RankContext, Ranked, Ranker
from streamrec.state.store import StateStore

__all__ = ["Recommender", "Request"]

#: Most popular items fetched per context, beyond k, to leave room after excluding seen items.
_POPULAR_SLACK = 200


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
        policy: str = "greedy",
        offload: bool | None = None,
    ) -> None:
        self.state = state
        self.ranker = ranker
        self.policy = policy
        # Model rankers run in a thread so the event loop keeps serving Kafka/HTTP meanwhile.
        self.offload = ranker.name != "popularity" if offload is None else offload

    async def rank(self, requests: Sequence[Request], k: int) -> list[Ranked]:
        if not requests:
            return []
        longest = max(len(request.history.excluded()) for request in requests)
        contexts = [(r.hour, r.device) for r in requests]
        popular = await self.state.popular_many(k + longest + _POPULAR_SLACK, contexts)
        rank_contexts = [
            RankContext(
                hour=r.hour,
                device=r.device,
                popular=_blend(popular[(r.hour, r.device)], popular[(None, None)]),
            )
            for r in requests
        ]
        histories = [r.history for r in requests]
        started = time.perf_counter()
        if self.offload:
            ranked = await asyncio.to_thread(self.ranker.rank, histories, rank_contexts, k)
        else:
            ranked = self.ranker.rank(histories, rank_contexts, k)
        metrics.INFERENCE_SECONDS.labels(self.ranker.name).observe(time.perf_counter() - started)
        return ranked

    def record(self, request: Request, ranked: Ranked) -> Recommendation:
        items = [
            RecommendedItem(
                item_id=item,
                score=float(score),
                position=position,
                propensity=ranked.propensities[position] if ranked.propensities else None,
                explanation=ranked.explanations[position] if ranked.explanations else None,
            )
            for position, (item, score) in enumerate(
                zip(ranked.item_ids, ranked.scores, strict=True)
            )
        ]
        return Recommendation(
            user_id=request.history.user_id,
            session_id=request.history.session_id,
            event_id=request.event_id,
            items=items,
            model_version=self.ranker.version,
            policy=self.policy,
            event_time=(
                datetime.fromtimestamp(request.event_time, UTC) if request.event_time else None
            ),
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
        return self.record(request, ranked)


def _blend(
    contextual: list[tuple[str, float]], overall: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Context's popular items first, then the overall list (deduplicated) to fill up."""
    if contextual is overall:
        return overall
    seen = {item for item, _ in contextual}
    return contextual + [(item, score) for item, score in overall if item not in seen]
