"""Candidate generation for the simulator: the sequence model's top-N for a history.

:class:`SequenceCandidates` wraps a trained :class:`~streamrec.models.base.SequenceModel` (the
same model the worker serves); :func:`train_candidate_model` trains one on the simulator's
training users only, with the project's trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from agents.envs.data import SimulatorData
from streamrec.data.sequences import SequenceData
from streamrec.models.base import SequenceModel, mask_scores
from streamrec.models.batching import left_pad
from streamrec.models.checkpoint import load_checkpoint

__all__ = [
    "CandidateSource",
    "SequenceCandidates",
    "load_candidate_model",
    "response_affinity",
    "train_candidate_model",
]

logger = logging.getLogger(__name__)


class CandidateSource(Protocol):
    """Top-``n`` item indices and scores for a history, never returning ``exclude``."""

    def top_n(
        self, history: np.ndarray, exclude: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def item_vectors(self) -> np.ndarray:
        """``[n_rows, dim]`` unit item vectors the *policy* may use for similarity features."""
        ...


class SequenceCandidates:
    """Candidates from a next-item model (batch of one, ``inference_mode``)."""

    def __init__(self, model: SequenceModel, cache_size: int = 8192) -> None:
        self.model = model.eval()
        self._cache: dict[tuple[bytes, bytes, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = cache_size
        weight = model.output_weight().detach().float().cpu().numpy()
        norms = np.linalg.norm(weight, axis=1, keepdims=True)
        self._vectors = (weight / np.maximum(norms, 1e-12)).astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        return self._vectors

    def top_n(
        self, history: np.ndarray, exclude: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        max_len = self.model.config.max_len
        key = (history[-max_len:].tobytes(), np.sort(exclude).tobytes(), n)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        item_seq = left_pad([history[-max_len:]], max_len)  # [1, L]
        with torch.inference_mode():
            scores = self.model.scores(self.model.last_hidden(item_seq)).float()  # [1, n_rows]
            seen = torch.as_tensor(np.asarray(exclude, dtype=np.int64))[None, :]
            scores = mask_scores(scores, seen if seen.numel() else None)
            top_scores, top_items = torch.topk(scores[0], min(n, self.model.n_items - 1))
        keep = torch.isfinite(top_scores)
        result = (top_items[keep].numpy(), top_scores[keep].numpy())
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = result
        return result


def train_candidate_model(
    data: SimulatorData,
    out_dir: str | Path,
    *,
    model: str = "gru4rec",
    time_budget_s: float = 240.0,
    max_len: int = 50,
    hidden: int = 48,
    seed: int = 0,
    dataset: str = "simulator training users",
) -> Path:
    """Train the candidate model on the simulator's training users only; return its dir.

    ``dataset`` only labels the checkpoint's metadata."""
    from streamrec.models.train import TrainConfig, train

    sequences = SequenceData(
        data.vocab, [str(i) for i in range(len(data.train_sequences))], data.train_sequences
    )
    config = TrainConfig(
        model=model,  # type: ignore[arg-type]
        dataset=dataset,
        time_budget_s=time_budget_s,
        seed=seed,
        val_users=500,
        progress=False,
        num_threads=1,
        lr=2e-3,
        batch_size=64,
        model_params={"max_len": max_len, "hidden": hidden},
    )
    result = train(config, data=sequences, out_dir=out_dir)
    logger.info("candidate model: test %s", result.test.metrics)
    assert result.checkpoint_dir is not None
    return result.checkpoint_dir


def response_affinity(
    model: SequenceModel, data: SimulatorData, *, future_items: int = 30
) -> np.ndarray:
    """``[n_users, n_rows]`` float16 affinity of each simulated user for every item.

    The user's taste is the mean of the response model's unit item vectors over their next
    ``future_items`` *real* items (what they actually went on to watch); the affinity of an
    item is its cosine to that taste. (The model's next-item log-probability given the whole
    history is no use here: a next-item model learns that consumed items do not come back, so it
    scores the user's own future items low.)
    """
    weight = model.output_weight().detach().float().cpu().numpy()  # [n_rows, hidden]
    vectors = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), 1e-12)
    rows = []
    for observed, future in zip(data.observed, data.future, strict=True):
        chosen = future[:future_items] if len(future) else observed[-future_items:]
        taste = vectors[chosen].mean(axis=0)
        taste = taste / max(float(np.linalg.norm(taste)), 1e-12)
        affinity = vectors @ taste
        affinity[0] = affinity[1:].min()
        rows.append(affinity.astype(np.float16))
    return np.stack(rows)


def load_candidate_model(directory: str | Path) -> SequenceCandidates:
    return SequenceCandidates(load_checkpoint(directory).model)
