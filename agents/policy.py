"""The candidate-scoring policy as plain torch: features, network, export and load.

Nothing here imports Ray: the simulator, the RLlib module (``agents/rl_module.py``) and the
serving re-ranker (``streamrec/serving/policy_ranker.py``) all share this code, so the features a
policy was trained on are computed the same way when it serves.

**Network** (:class:`CandidateScorer`): one MLP with *shared weights* scores every candidate from
``[candidate features ‖ session context]``; invalid slots are masked to a large negative logit.
The value head (used by PPO/MARWIL) reads the masked mean of the per-candidate hidden states and
the context. A policy is therefore independent of the candidate count and of item ids.

**Export** (:func:`export_policy`, :func:`load_policy`): a directory with ``policy.safetensors``
(the network's state_dict plus the item table: policy item vectors, popularity, quality) and
``policy.json`` (network config, feature names, item ids, metadata). No pickle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "CONTEXT",
    "FEATURES",
    "MASKED_LOGIT",
    "N_CONTEXT",
    "N_FEATURES",
    "CandidateScorer",
    "ExportedPolicy",
    "ItemTable",
    "ScorerConfig",
    "candidate_features",
    "export_policy",
    "load_policy",
    "session_context",
]

logger = logging.getLogger(__name__)

FEATURES = (
    "score_z",  # sequence-model score, standardised within the pool
    "rank",  # sequence-model rank / n_slots
    "sim_last_page",  # max cosine (policy item vectors) to the items on the previous page
    "sim_recent",  # max cosine to the newest (up to 10) consumed items of the session
    "times_shown",  # times shown in this session / 3, clipped at 1
    "popularity",  # log-popularity in [0, 1]
    "quality",  # mean rating in [0, 1]
    "bias",
)
CONTEXT = ("progress", "clicks_last_page", "click_rate", "repeat_share_last_page")
N_FEATURES = len(FEATURES)
N_CONTEXT = len(CONTEXT)
#: Logit of a masked slot (finite, so softmax and log-probs stay finite).
MASKED_LOGIT = -1e9

_FORMAT = "streamrec.policy/1"


def candidate_features(
    pool: np.ndarray,
    scores: np.ndarray,
    n_slots: int,
    *,
    vectors: np.ndarray,
    popularity: np.ndarray,
    quality: np.ndarray,
    last_page: Sequence[int] = (),
    recent: Sequence[int] = (),
    times_shown: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``[n_slots, N_FEATURES]`` features and ``[n_slots]`` mask for a candidate pool.

    ``pool`` are row indices into the item arrays (best sequence-model score first), ``scores``
    their sequence-model scores; ``last_page`` / ``recent`` are row indices (unknown items must be
    dropped by the caller); ``times_shown`` per pool item.
    """
    features = np.zeros((n_slots, N_FEATURES), dtype=np.float32)
    mask = np.zeros(n_slots, dtype=np.float32)
    size = min(len(pool), n_slots)
    if size == 0:
        return features, mask
    pool = np.asarray(pool[:size], dtype=np.int64)
    values = np.asarray(scores[:size], dtype=np.float64)
    spread = float(values.std()) if size > 1 else 1.0
    features[:size, 0] = (values - values.mean()) / max(spread, 1e-6)
    features[:size, 1] = np.arange(size) / n_slots
    if len(last_page):
        features[:size, 2] = np.max(vectors[pool] @ vectors[list(last_page)].T, axis=1)
    if len(recent):
        features[:size, 3] = np.max(vectors[pool] @ vectors[list(recent)[-10:]].T, axis=1)
    if times_shown is not None:
        features[:size, 4] = np.minimum(np.asarray(times_shown[:size], dtype=np.float32) / 3, 1)
    features[:size, 5] = popularity[pool]
    features[:size, 6] = quality[pool]
    features[:size, 7] = 1.0
    mask[:size] = 1.0
    return np.clip(features, -10.0, 10.0), mask


def session_context(
    step_index: int,
    horizon: int,
    last_clicks: int,
    total_clicks: int,
    slate_size: int,
    repeat_share: float,
) -> np.ndarray:
    """``[N_CONTEXT]`` session features (see ``CONTEXT``)."""
    return np.array(
        [
            min(step_index / max(horizon, 1), 1.0),
            min(last_clicks, 3) / 3.0,
            total_clicks / max(step_index, 1) / max(slate_size, 1),
            repeat_share,
        ],
        dtype=np.float32,
    )


@dataclass(frozen=True)
class ScorerConfig:
    hidden: int = 64
    n_features: int = N_FEATURES
    n_context: int = N_CONTEXT


class CandidateScorer(nn.Module):
    """Shared-weight candidate scorer with a value head (see the module docstring)."""

    def __init__(self, config: ScorerConfig | None = None) -> None:
        super().__init__()
        self.config = config or ScorerConfig()
        width = self.config.hidden
        in_dim = self.config.n_features + self.config.n_context
        self.encoder = nn.Sequential(
            nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh()
        )
        self.logit_head = nn.Linear(width, 1)
        self.value_head = nn.Sequential(
            nn.Linear(width + self.config.n_context, width), nn.Tanh(), nn.Linear(width, 1)
        )
        nn.init.zeros_(self.logit_head.weight)
        nn.init.zeros_(self.logit_head.bias)

    def _hidden(self, candidates: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n_slots = candidates.shape[-2]
        expanded = context.unsqueeze(-2).expand(*context.shape[:-1], n_slots, context.shape[-1])
        return self.encoder(torch.cat([candidates, expanded], dim=-1))  # [batch, n, hidden]

    def logits(
        self, candidates: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``candidates`` ``[batch, n, F]``, ``context`` ``[batch, G]``, ``mask`` ``[batch, n]``
        -> masked logits ``[batch, n]``."""
        raw = self.logit_head(self._hidden(candidates, context)).squeeze(-1)  # [batch, n]
        return raw.masked_fill(mask <= 0, MASKED_LOGIT)

    def logits_and_value(
        self, candidates: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self._hidden(candidates, context)  # [batch, n, hidden]
        raw = self.logit_head(hidden).squeeze(-1)
        weights = mask.unsqueeze(-1)  # [batch, n, 1]
        pooled = (hidden * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)  # [batch, hidden]
        value = self.value_head(torch.cat([pooled, context], dim=-1)).squeeze(-1)  # [batch]
        return raw.masked_fill(mask <= 0, MASKED_LOGIT), value


@dataclass(frozen=True)
class ItemTable:
    """What the policy knows about items, aligned by row (row 0 = padding)."""

    item_ids: list[str]
    vectors: np.ndarray  # [n_rows, dim] unit rows
    popularity: np.ndarray  # [n_rows]
    quality: np.ndarray  # [n_rows]

    def __post_init__(self) -> None:
        rows = len(self.item_ids) + 1
        if not (self.vectors.shape[0] == len(self.popularity) == len(self.quality) == rows):
            raise ValueError("item table arrays must have len(item_ids) + 1 rows")

    def index(self) -> dict[str, int]:
        return {item_id: row + 1 for row, item_id in enumerate(self.item_ids)}


@dataclass
class ExportedPolicy:
    """A loaded policy: network (eval mode), item table, serving defaults and metadata."""

    scorer: CandidateScorer
    items: ItemTable
    n_slots: int
    slate_size: int
    horizon: int
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, candidates: np.ndarray, context: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Numpy convenience: ``[n]`` logits for one request (or ``[batch, n]``)."""
        single = candidates.ndim == 2
        with torch.inference_mode():
            out = self.scorer.logits(
                torch.as_tensor(candidates[None] if single else candidates),
                torch.as_tensor(context[None] if single else context),
                torch.as_tensor(mask[None] if single else mask),
            )
        result = out.numpy()
        return result[0] if single else result


def export_policy(
    directory: str | Path,
    scorer: CandidateScorer,
    items: ItemTable,
    *,
    n_slots: int,
    slate_size: int,
    horizon: int,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``policy.safetensors`` + ``policy.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in scorer.state_dict().items()}
    tensors["items.vectors"] = torch.as_tensor(np.asarray(items.vectors, dtype=np.float32))
    tensors["items.popularity"] = torch.as_tensor(np.asarray(items.popularity, dtype=np.float32))
    tensors["items.quality"] = torch.as_tensor(np.asarray(items.quality, dtype=np.float32))
    save_file(tensors, str(directory / "policy.safetensors"))
    payload = {
        "format": _FORMAT,
        "scorer": asdict(scorer.config),
        "features": list(FEATURES),
        "context": list(CONTEXT),
        "n_slots": n_slots,
        "slate_size": slate_size,
        "horizon": horizon,
        "item_ids": list(items.item_ids),
        "meta": dict(meta or {}),
    }
    (directory / "policy.json").write_text(json.dumps(payload), encoding="utf-8")
    logger.info("exported policy to %s", directory)
    return directory


def load_policy(directory: str | Path) -> ExportedPolicy:
    """Load an exported policy (plain torch + safetensors; no Ray, no pickle)."""
    directory = Path(directory)
    payload = json.loads((directory / "policy.json").read_text(encoding="utf-8"))
    if payload.get("format") != _FORMAT:
        raise ValueError(f"{directory} is not a {_FORMAT} export")
    if tuple(payload["features"]) != FEATURES or tuple(payload["context"]) != CONTEXT:
        raise ValueError(f"{directory} was exported with different features")
    tensors = load_file(str(directory / "policy.safetensors"))
    scorer = CandidateScorer(ScorerConfig(**payload["scorer"]))
    scorer.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    scorer.eval()
    items = ItemTable(
        item_ids=list(payload["item_ids"]),
        vectors=tensors["items.vectors"].numpy(),
        popularity=tensors["items.popularity"].numpy(),
        quality=tensors["items.quality"].numpy(),
    )
    return ExportedPolicy(
        scorer=scorer,
        items=items,
        n_slots=int(payload["n_slots"]),
        slate_size=int(payload["slate_size"]),
        horizon=int(payload["horizon"]),
        meta=dict(payload.get("meta", {})),
    )
