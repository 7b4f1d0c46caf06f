"""A tiny synthetic simulator world for tests and smoke runs (no ML-1M, no trained model).

Items and users live in a random low-dimensional space; the "sequence model" scores items by a
*noisy* copy of the item vectors against the mean of the history, so it is informative but not
the user's true taste, as with the real candidate model.
"""

from __future__ import annotations

import numpy as np

from agents.envs.data import SimulatorData
from streamrec.data.sequences import Vocabulary

__all__ = ["EmbeddingCandidates", "synthetic_world"]


class EmbeddingCandidates:
    """Scores = item vectors . mean(history vectors); a stand-in for the sequence model."""

    def __init__(self, vectors: np.ndarray) -> None:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        self._vectors[0] = 0.0

    def item_vectors(self) -> np.ndarray:
        return self._vectors

    def top_n(
        self, history: np.ndarray, exclude: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        query = (
            self._vectors[history[-20:]].mean(axis=0) if len(history) else self._vectors[1:].mean(0)
        )
        scores = self._vectors @ query
        scores[0] = -np.inf
        scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
        order = np.argsort(-scores, kind="stable")[:n]
        order = order[np.isfinite(scores[order])]
        return order.astype(np.int64), scores[order].astype(np.float32)


def synthetic_world(
    n_items: int = 80, n_users: int = 40, dim: int = 8, seed: int = 0, noise: float = 0.6
) -> tuple[SimulatorData, EmbeddingCandidates]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_items + 1, dim))
    factors /= np.linalg.norm(factors, axis=1, keepdims=True)
    factors[0] = 0.0
    tastes = rng.normal(size=(n_users, dim))
    tastes /= np.linalg.norm(tastes, axis=1, keepdims=True)
    observed, future = [], []
    for user in range(n_users):
        liked = np.argsort(-(factors[1:] @ tastes[user]))[:30] + 1
        chosen = rng.permutation(liked)
        observed.append(chosen[:10].astype(np.int64))
        future.append(chosen[10:20].astype(np.int64))
    quality = rng.uniform(0.3, 1.0, size=n_items + 1).astype(np.float32)
    quality[0] = 0.0
    popularity = rng.uniform(0.0, 1.0, size=n_items + 1).astype(np.float32)
    data = SimulatorData(
        vocab=Vocabulary(str(i) for i in range(1, n_items + 1)),
        train_sequences=[],
        observed=observed,
        future=future,
        user_taste=tastes.astype(np.float32),
        item_factors=factors.astype(np.float32),
        item_quality=quality,
        item_popularity=popularity,
        session_lengths=np.minimum(rng.geometric(0.15, size=500), 60),
    )
    noisy = factors + noise * rng.normal(size=factors.shape)
    return data, EmbeddingCandidates(noisy)
