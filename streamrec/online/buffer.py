"""Replay buffer: recent sessions plus a reservoir sample of older ones (against forgetting).

Every example is trained on at least once while it is recent: :meth:`ReplayBuffer.sample` fills
the recent part of a batch with the examples not yet drawn (oldest first), and only then with a
uniform sample of the recent window; the rest of the batch comes from the reservoir.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Any

__all__ = ["ReplayBuffer"]

Example = tuple[int, ...]  # item indices, oldest first; the last one is the target


class ReplayBuffer:
    """``recent`` keeps the newest examples; ``reservoir`` a uniform sample of everything that
    left ``recent`` (Vitter's algorithm R), so old patterns keep a voice in every batch."""

    def __init__(self, recent_size: int = 2048, reservoir_size: int = 8192, seed: int = 0) -> None:
        self.recent: deque[Example] = deque(maxlen=recent_size)
        self.reservoir: list[Example] = []
        self.reservoir_size = reservoir_size
        self.seen_old = 0  # examples that ever left `recent`
        self.fresh = 0  # newest examples in `recent` not drawn into a batch yet
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.recent) + len(self.reservoir)

    def add(self, example: Sequence[int]) -> None:
        if len(self.recent) == self.recent.maxlen:
            self._to_reservoir(self.recent[0])
        self.recent.append(tuple(example))
        self.fresh = min(self.fresh + 1, len(self.recent))

    def _to_reservoir(self, example: Example) -> None:
        self.seen_old += 1
        if len(self.reservoir) < self.reservoir_size:
            self.reservoir.append(example)
            return
        slot = self._rng.randrange(self.seen_old)
        if slot < self.reservoir_size:
            self.reservoir[slot] = example

    def sample(self, batch_size: int, recent_share: float = 0.5) -> list[Example]:
        """A batch mixing recent examples and the reservoir (more recent ones if it is short).

        The recent part takes undrawn examples first, oldest first, then a uniform sample of
        the recent window, so a stream faster than the training rate is still sampled evenly
        instead of training on the same newest examples again and again.
        """
        n_recent = min(len(self.recent), max(1, round(batch_size * recent_share)))
        n_old = min(len(self.reservoir), batch_size - n_recent)
        n_recent = min(len(self.recent), batch_size - n_old)
        n_fresh = min(self.fresh, n_recent)
        start = len(self.recent) - self.fresh
        batch = list(islice(self.recent, start, start + n_fresh))
        self.fresh -= n_fresh
        if n_recent > n_fresh:
            batch += self._rng.sample(self.recent, n_recent - n_fresh)
        if n_old:
            batch += self._rng.sample(self.reservoir, n_old)
        return batch

    def state(self) -> dict[str, Any]:
        return {
            "recent": [list(example) for example in self.recent],
            "reservoir": [list(example) for example in self.reservoir],
            "seen_old": self.seen_old,
            "fresh": self.fresh,
            "rng": self._rng.getstate(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.recent.clear()
        self.recent.extend(tuple(example) for example in state["recent"])
        self.reservoir = [tuple(example) for example in state["reservoir"]]
        self.seen_old = int(state["seen_old"])
        self.fresh = min(int(state.get("fresh", 0)), len(self.recent))
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
