"""Ranking metrics for next-item prediction with one relevant item per user (pure numpy).

``ranks`` are 0-based positions of the held-out item in the full ranking (0 = first place).
With a single relevant item, HR@k equals Recall@k, NDCG@k is ``1 / log2(rank + 2)`` inside the
cut-off and MRR@k is ``1 / (rank + 1)`` inside it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "MISS",
    "catalogue_coverage",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "ranking_metrics",
    "ranks_from_scores",
]

#: Rank of a target that cannot be recommended (masked as seen, unknown to the model): past
#: any cut-off, so it is a miss whatever ``k`` and however small the catalogue.
MISS = 1 << 30


def ranks_from_scores(scores: npt.ArrayLike, targets: npt.ArrayLike) -> np.ndarray:
    """0-based rank of each target: how many items score strictly higher.

    ``scores`` is ``[users, items]``, ``targets`` ``[users]`` column indices.
    """
    score_matrix = np.asarray(scores, dtype=np.float64)  # [users, items]
    target_index = np.asarray(targets, dtype=np.int64)  # [users]
    target_scores = score_matrix[np.arange(len(target_index)), target_index]  # [users]
    return (score_matrix > target_scores[:, None]).sum(axis=1)


def hit_rate_at_k(ranks: npt.ArrayLike, k: int) -> float:
    """Share of users whose item is in the top ``k`` (= Recall@k with one relevant item)."""
    rank_array = np.asarray(ranks)
    return float((rank_array < k).mean()) if rank_array.size else 0.0


def ndcg_at_k(ranks: npt.ArrayLike, k: int) -> float:
    """Mean NDCG@k; the ideal DCG is 1 with a single relevant item."""
    rank_array = np.asarray(ranks, dtype=np.float64)
    if not rank_array.size:
        return 0.0
    gains = np.where(rank_array < k, 1.0 / np.log2(rank_array + 2.0), 0.0)
    return float(gains.mean())


def mrr_at_k(ranks: npt.ArrayLike, k: int) -> float:
    """Mean reciprocal rank, zero outside the top ``k``."""
    rank_array = np.asarray(ranks, dtype=np.float64)
    if not rank_array.size:
        return 0.0
    return float(np.where(rank_array < k, 1.0 / (rank_array + 1.0), 0.0).mean())


def catalogue_coverage(top_items: npt.ArrayLike, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k list (negative
    entries are empty slots)."""
    if n_items <= 0:
        return 0.0
    unique = np.unique(np.asarray(top_items))
    return float((unique >= 0).sum() / n_items)


def ranking_metrics(
    ranks: npt.ArrayLike,
    k: int = 10,
    top_items: npt.ArrayLike | None = None,
    n_items: int | None = None,
) -> dict[str, float]:
    """HR/Recall, NDCG and MRR at ``k`` (+ coverage when ``top_items`` and ``n_items`` given)."""
    metrics = {
        f"hr@{k}": hit_rate_at_k(ranks, k),
        f"recall@{k}": hit_rate_at_k(ranks, k),
        f"ndcg@{k}": ndcg_at_k(ranks, k),
        f"mrr@{k}": mrr_at_k(ranks, k),
    }
    if top_items is not None and n_items is not None:
        metrics[f"coverage@{k}"] = catalogue_coverage(top_items, n_items)
    return metrics
