"""Agent tests: small, single-threaded torch, the synthetic world unless a test says otherwise."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)
