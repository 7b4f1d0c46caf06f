"""Prequential ("test, then train") evaluation: rank each event's item before learning from it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from streamrec.models.base import SequenceModel, mask_scores
from streamrec.models.batching import left_pad
from streamrec.models.metrics import MISS, hit_rate_at_k, ndcg_at_k

__all__ = ["RollingMetrics", "rank_targets"]

#: Rank given to a target the model cannot score (unknown to its vocabulary, or seen).
UNRANKABLE = MISS


@torch.inference_mode()
def rank_targets(
    model: SequenceModel,
    histories: Sequence[Sequence[int]],
    targets: Sequence[int | None],
    *,
    exclude_seen: bool = False,
) -> np.ndarray:
    """0-based rank of each target among all items, given its history (indices, oldest first).

    A target of ``None`` or outside the model's table (an item it has never seen) gets
    :data:`UNRANKABLE`, and so does a history with no item the model knows (a cold start is
    not the sequence model's to rank). History items outside the table are skipped.
    """
    ranks = np.full(len(targets), UNRANKABLE, dtype=np.int64)
    n_items = model.n_items
    known = [[index for index in history if 0 < index < n_items] for history in histories]
    rows = [
        row
        for row, target in enumerate(targets)
        if target is not None and 0 < target < n_items and known[row]
    ]
    if not rows:
        return ranks
    was_training = model.training
    model.eval()
    try:
        item_seq = left_pad([known[row] for row in rows], model.config.max_len)
        item_scores = model.scores(model.last_hidden(item_seq.to(model.device))).float()
    finally:
        model.train(was_training)
    seen = left_pad([known[row] for row in rows], 10**9) if exclude_seen else None
    item_scores = mask_scores(item_scores, seen)  # [rows, n_items]
    target_index = torch.tensor([targets[row] for row in rows], device=item_scores.device)
    target_scores = item_scores.gather(1, target_index[:, None])  # [rows, 1]
    row_ranks = (item_scores > target_scores).sum(dim=1)
    row_ranks[torch.isneginf(target_scores[:, 0])] = UNRANKABLE  # a seen item: a miss
    ranks[rows] = row_ranks.cpu().numpy()
    return ranks


class RollingMetrics:
    """HR@k / NDCG@k over the last ``window`` ranks."""

    def __init__(self, window: int = 5000, k: int = 10) -> None:
        self.ranks: deque[int] = deque(maxlen=window)
        self.k = k
        self.total = 0
        self._ndcg_sum = 0.0
        self._hits = 0

    def add(self, ranks: Sequence[int] | np.ndarray) -> None:
        values = np.asarray(ranks, dtype=np.int64)
        self.ranks.extend(values.tolist())
        self.total += len(values)
        inside = values < self.k
        self._hits += int(inside.sum())
        self._ndcg_sum += float((1.0 / np.log2(values[inside] + 2.0)).sum())

    @property
    def ndcg_all(self) -> float:
        """NDCG@k over every rank ever added (not just the window)."""
        return self._ndcg_sum / self.total if self.total else 0.0

    @property
    def hr_all(self) -> float:
        return self._hits / self.total if self.total else 0.0

    def __len__(self) -> int:
        return len(self.ranks)

    @property
    def ndcg(self) -> float:
        return ndcg_at_k(np.fromiter(self.ranks, dtype=np.int64), self.k)

    @property
    def hr(self) -> float:
        return hit_rate_at_k(np.fromiter(self.ranks, dtype=np.int64), self.k)

    def ndcg_last(self, n: int) -> float:
        """NDCG@k over the newest ``n`` ranks of the window."""
        return ndcg_at_k(self.last(n), self.k) if n > 0 else 0.0

    def last(self, n: int) -> np.ndarray:
        values = np.fromiter(self.ranks, dtype=np.int64)
        return values[-n:]
