"""The baseline ranker: recent (time-decayed) popularity, context-aware, excluding seen items."""

from __future__ import annotations

from collections.abc import Sequence

from streamrec.serving.ranker import History, RankContext, Ranked

__all__ = ["PopularityRanker"]


class PopularityRanker:
    """Ranks the context's popular items (filled from Redis by the service) minus seen items.

    Scores are log2 decayed counts relative to the list's leader (0 for the most popular).
    """

    name = "popularity"
    version = "popularity-v1"

    def rank(
        self, histories: Sequence[History], contexts: Sequence[RankContext], k: int
    ) -> list[Ranked]:
        out = []
        for history, context in zip(histories, contexts, strict=True):
            excluded = history.excluded()
            items: list[str] = []
            scores: list[float] = []
            top = context.popular[0][1] if context.popular else 0.0
            for item, score in context.popular:
                if item in excluded:
                    continue
                items.append(item)
                scores.append(score - top)
                if len(items) == k:
                    break
            out.append(Ranked(items, scores))
        return out
