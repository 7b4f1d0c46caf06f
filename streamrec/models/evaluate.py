"""Full-ranking evaluation: every user's held-out item ranked against the whole catalogue.

No sampled negatives. Padding is never ranked; with ``exclude_seen`` every item in the user's
input history is removed from the ranking first (the convention of the SASRec+/gSASRec papers),
and a target the user has already seen (a repeat, common in implicit-feedback logs) counts as a
miss. Ties count in the target's favour (rank = number of items scoring strictly higher).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from streamrec.models.base import SequenceModel, mask_scores
from streamrec.models.batching import left_pad, seen_matrix
from streamrec.models.metrics import MISS, ranking_metrics

__all__ = [
    "EvalResult",
    "ScoreFn",
    "evaluate_model",
    "evaluate_popularity",
    "evaluate_scores",
    "popularity_counts",
]

logger = logging.getLogger(__name__)

#: Scores ``[batch, n_rows]`` for a batch of index histories.
ScoreFn = Callable[[Sequence[np.ndarray]], torch.Tensor]


@dataclass(frozen=True)
class EvalResult:
    """Metrics at ``k`` plus the raw ranks (0-based) and top-k lists they came from."""

    metrics: dict[str, float]
    k: int
    exclude_seen: bool
    n_users: int
    ranks: np.ndarray = field(repr=False)
    top_items: np.ndarray = field(repr=False)


def evaluate_scores(
    score_fn: ScoreFn,
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    n_rows: int,
    *,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 256,
) -> EvalResult:
    """Rank each ``targets[u]`` given history ``inputs[u]`` with any scoring function."""
    all_ranks: list[np.ndarray] = []
    all_top: list[np.ndarray] = []
    for start in range(0, len(inputs), batch_size):
        histories = inputs[start : start + batch_size]
        batch_targets = torch.as_tensor(targets[start : start + batch_size], dtype=torch.int64)
        item_scores = score_fn(histories).float().cpu()  # [batch, n_rows]
        item_scores = mask_scores(item_scores, seen_matrix(histories) if exclude_seen else None)
        target_scores = item_scores.gather(1, batch_targets[:, None])  # [batch, 1]
        batch_ranks = (item_scores > target_scores).sum(dim=1)
        # A target masked as seen (a repeat) cannot be recommended: a miss at any k, not the
        # count of the items left, which is a "hit" whenever a user has seen nearly everything.
        batch_ranks[torch.isneginf(target_scores[:, 0])] = MISS
        all_ranks.append(batch_ranks.numpy())
        top = torch.topk(item_scores, min(k, n_rows - 1), dim=1)
        # Slots with nothing left to rank (score -inf) hold masked items: not recommended.
        all_top.append(top.indices.masked_fill(torch.isneginf(top.values), -1).numpy())
    ranks = np.concatenate(all_ranks) if all_ranks else np.zeros(0, dtype=np.int64)
    top_items = np.concatenate(all_top) if all_top else np.zeros((0, k), dtype=np.int64)
    metrics = ranking_metrics(ranks, k, top_items=top_items, n_items=n_rows - 1)
    return EvalResult(metrics, k, exclude_seen, len(ranks), ranks, top_items)


def evaluate_model(
    model: SequenceModel,
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 256,
) -> EvalResult:
    """Full-ranking metrics of ``model`` (switched to eval mode for the duration)."""
    was_training = model.training
    model.eval()
    max_len = model.config.max_len

    def score_fn(histories: Sequence[np.ndarray]) -> torch.Tensor:
        item_seq = left_pad(histories, max_len).to(model.device)  # [batch, L]
        with torch.inference_mode():
            return model.scores(model.last_hidden(item_seq))  # [batch, n_items]

    try:
        return evaluate_scores(
            score_fn,
            inputs,
            targets,
            model.n_items,
            k=k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
        )
    finally:
        model.train(was_training)


def popularity_counts(sequences: Sequence[np.ndarray], n_rows: int) -> np.ndarray:
    """Interaction count per item index ``[n_rows]`` (float64)."""
    if not sequences:
        return np.zeros(n_rows)
    return np.bincount(np.concatenate(sequences), minlength=n_rows).astype(np.float64)


def evaluate_popularity(
    train_sequences: Sequence[np.ndarray],
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    n_rows: int,
    *,
    k: int = 10,
    exclude_seen: bool = True,
) -> EvalResult:
    """The most-popular baseline: the same ranking for everyone by training-data counts."""
    counts = torch.as_tensor(popularity_counts(train_sequences, n_rows))  # [n_rows]

    def score_fn(histories: Sequence[np.ndarray]) -> torch.Tensor:
        return counts[None, :].expand(len(histories), -1)

    return evaluate_scores(score_fn, inputs, targets, n_rows, k=k, exclude_seen=exclude_seen)
