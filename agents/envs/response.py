"""The simulated user's response model: who clicks what, at which position, and who leaves.

For a user ``u`` with unit taste vector ``t_u`` and an item ``i`` with unit response vector
``f_i`` shown at slate position ``p`` (0 = top)::

    affinity(u, i) = cos(e_i, mean of e_j over u's next 30 real items)  (response model vectors)
    P(click)       = examine(p) * sigmoid(a + b * affinity - r * times_shown_before(i))
    examine(p)     = 1 / log2(p + 2)                   (DCG-style position bias)

``a`` and ``b`` are fitted by logistic regression on real held-out ML-1M users: label = the
sequence model's candidate is among the user's next ``window`` real items (see
``agents/envs/calibration.py``). After each page the user leaves with probability::

    logit(P(leave)) = logit(h_u) + shift + c_b * boredom - c_s * clicks_on_this_page

where ``h_u ~ Beta(alpha, beta)`` is the user's patience, fitted (beta-geometric maximum
likelihood) to the real 30-minute session lengths of held-out ML-1M users; ``boredom`` is an
exponentially decayed share of repeated / near-duplicate items on the pages shown; ``shift`` is
set by bisection so that the greedy sequence-model policy reproduces the real mean session length
(capped at the horizon). A policy that bores users less, or satisfies them more, keeps them
longer.

A click is worth ``1 + watch_weight * quality(i)`` (quality = the item's mean rating in [0, 1]),
and staying for another page ``continue_bonus``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResponseParams", "examine_probability"]


def examine_probability(positions: np.ndarray) -> np.ndarray:
    """DCG-style position bias: 1, 0.63, 0.5, 0.43, ..."""
    return 1.0 / np.log2(np.asarray(positions, dtype=np.float64) + 2.0)


@dataclass(frozen=True)
class ResponseParams:
    """Calibrated constants of the response model (JSON next to the simulator data)."""

    click_intercept: float = -3.0
    click_slope: float = 4.0
    repeat_penalty: float = 1.0
    patience_alpha: float = 1.0
    patience_beta: float = 4.0
    boredom_coef: float = 1.0
    satisfaction_coef: float = 0.5
    hazard_shift: float = 0.0
    boredom_decay: float = 0.6
    #: Cosine (policy-independent response space) above which two items count as near-duplicates.
    duplicate_cosine: float = 0.8
    watch_weight: float = 1.0
    continue_bonus: float = 0.1
    #: Real statistics the calibration matched (for the docs and tests).
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> ResponseParams:
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ResponseParams:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
