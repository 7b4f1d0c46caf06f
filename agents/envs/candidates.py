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

    def __init__(self, model: SequenceModel) -> None:
        self.model = model.eval()
        weight = model.output_weight().detach().float().cpu().numpy()
        norms = np.linalg.norm(weight, axis=1, keepdims=True)
        self._vectors = (weight / np.maximum(norms, 1e-12)).astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        return self._vectors

    def top_n(
        self, history: np.ndarray, exclude: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        max_len = self.model.config.max_len
        item_seq = left_pad([history[-max_len:]], max_len)  # [1, L]
        with torch.inference_mode():
            scores = self.model.scores(self.model.last_hidden(item_seq)).float()  # [1, n_rows]
            seen = torch.as_tensor(np.asarray(exclude, dtype=np.int64))[None, :]
            scores = mask_scores(scores, seen if seen.numel() else None)
            top_scores, top_items = torch.topk(scores[0], min(n, self.model.n_items - 1))
        keep = torch.isfinite(top_scores)
        return top_items[keep].numpy(), top_scores[keep].numpy()


def train_candidate_model(
    data: SimulatorData,
    out_dir: str | Path,
    *,
    model: str = "gru4rec",
    time_budget_s: float = 240.0,
    max_len: int = 50,
    hidden: int = 48,
    seed: int = 0,
) -> Path:
    """Train the candidate model on the simulator's training users only; return its dir."""
    from streamrec.models.train import TrainConfig, train

    sequences = SequenceData(
        data.vocab, [str(i) for i in range(len(data.train_sequences))], data.train_sequences
    )
    config = TrainConfig(
        model=model,  # type: ignore[arg-type]
        dataset="ml-1m (simulator training users)",
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
    model: SequenceModel, data: SimulatorData, batch_size: int = 128
) -> np.ndarray:
    """``[n_users, n_rows]`` float16 log-softmax scores of every item given each simulated
    user's whole true history (observed + future); padding gets the minimum."""
    model.eval()
    rows = []
    sequences = [np.concatenate([o, f]) for o, f in zip(data.observed, data.future, strict=True)]
    max_len = model.config.max_len
    for start in range(0, len(sequences), batch_size):
        item_seq = left_pad(sequences[start : start + batch_size], max_len)
        with torch.inference_mode():
            scores = model.scores(model.last_hidden(item_seq)).float()  # [batch, n_rows]
            scores[:, 0] = float("-inf")
            log_probs = torch.log_softmax(scores, dim=-1)
            log_probs[:, 0] = log_probs[:, 1:].min(dim=-1).values
        rows.append(log_probs.numpy().astype(np.float16))
    return np.concatenate(rows)


def load_candidate_model(directory: str | Path) -> SequenceCandidates:
    return SequenceCandidates(load_checkpoint(directory).model)
