"""Small real models for the online-learning tests (synthetic items: logic, not quality)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamrec.data.sequences import Vocabulary
from streamrec.models.base import ModelConfig, SequenceModel
from streamrec.models.checkpoint import build_model
from streamrec.models.registry import ModelRegistry


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


def tiny_model(n_items: int, seed: int = 0) -> SequenceModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        kind="sasrec", n_items=n_items + 1, max_len=12, hidden=16, n_layers=1, dropout=0.0
    )
    model = build_model(config)
    model.eval()
    return model


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary([f"i{n}" for n in range(30)])


@pytest.fixture
def registry(tmp_path: Path, vocab: Vocabulary) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    version = registry.save(tiny_model(vocab.n_items), vocab, {"dataset": "synthetic"})
    registry.promote(version)
    return registry
