"""Tiny deterministic models and vocabularies for the model tests."""

from __future__ import annotations

import torch

from streamrec.data.sequences import Vocabulary
from streamrec.models.base import ModelConfig, SequenceModel
from streamrec.models.checkpoint import build_model


def tiny_model(kind: str = "sasrec", n_items: int = 21, **overrides: object) -> SequenceModel:
    """A small model (seeded) over ``n_items`` rows (``n_items - 1`` items + padding)."""
    torch.manual_seed(0)
    params: dict[str, object] = {
        "max_len": 12,
        "hidden": 16,
        "n_layers": 2,
        "n_heads": 2,
        "dropout": 0.0,
    }
    params.update(overrides)
    return build_model(ModelConfig(kind=kind, n_items=n_items, **params))  # type: ignore[arg-type]


def tiny_vocab(n_items: int = 20) -> Vocabulary:
    return Vocabulary(f"item{i}" for i in range(1, n_items + 1))
