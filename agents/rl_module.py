"""The candidate-scoring RLModule (RLlib new API stack, torch).

Wraps :class:`agents.policy.CandidateScorer`: the environment's ``Dict`` observation
(``candidates [n, F]``, ``context [G]``, ``action_mask [n]``) is scored candidate by candidate
with shared weights (parametric actions), masked slots get a large negative logit, and the
``Discrete(n)`` action distribution is RLlib's default categorical over those logits. Implements
:class:`ValueFunctionAPI`, so the same module trains with PPO, APPO, MARWIL and BC.

Only ``setup`` and ``_forward`` are overridden (RLlib's template methods); ``compute_values``
serves the value-function API. :func:`scorer_of` returns the plain-torch network for export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from agents.policy import CandidateScorer, ScorerConfig

__all__ = ["CandidateScoringRLModule", "scorer_from_weights", "scorer_of"]


class CandidateScoringRLModule(TorchRLModule, ValueFunctionAPI):
    """``model_config``: ``{"hidden": 64}``."""

    def setup(self) -> None:
        spaces = self.observation_space
        n_features = int(spaces["candidates"].shape[-1])  # type: ignore[index]
        n_context = int(spaces["context"].shape[-1])  # type: ignore[index]
        model_config = self.model_config if isinstance(self.model_config, dict) else {}
        hidden = int(model_config.get("hidden", 64))
        self.scorer = CandidateScorer(
            ScorerConfig(hidden=hidden, n_features=n_features, n_context=n_context)
        )

    @staticmethod
    def _inputs(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        observation = batch[Columns.OBS]
        return (
            observation["candidates"].float(),  # [batch, n, F]
            observation["context"].float(),  # [batch, G]
            observation["action_mask"].float(),  # [batch, n]
        )

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits = self.scorer.logits(*self._inputs(batch))  # [batch, n]
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, values = self.scorer.logits_and_value(*self._inputs(batch))
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: values}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is not None:
            return embeddings
        _, values = self.scorer.logits_and_value(*self._inputs(batch))
        return values  # [batch]


def scorer_from_weights(weights: Mapping[str, Any], hidden: int) -> CandidateScorer:
    """Rebuild the scorer from a module state dict (e.g. ``learner_group.get_weights()``)."""
    state = {
        name.removeprefix("scorer."): torch.as_tensor(np.asarray(value))
        for name, value in weights.items()
        if name.startswith("scorer.")
    }
    n_features = int(state["encoder.0.weight"].shape[1])
    n_context = int(state["value_head.0.weight"].shape[1]) - hidden
    scorer = CandidateScorer(
        ScorerConfig(hidden=hidden, n_features=n_features - n_context, n_context=n_context)
    )
    scorer.load_state_dict(state)
    return scorer.eval()


def scorer_of(module: Any) -> CandidateScorer:
    """The plain-torch scorer inside a (possibly DDP-wrapped) module."""
    inner = getattr(module, "unwrapped", lambda: module)()
    scorer = inner.scorer
    if not isinstance(scorer, CandidateScorer):
        raise TypeError(f"{type(inner).__name__} has no CandidateScorer")
    return scorer
