"""What every next-item model shares: config, item tables, scoring, top-k, growth, explanations.

Conventions (both models):

* input sequences are item indices ``[batch, seq_len]``, **left**-padded with 0, oldest first,
  ``seq_len <= max_len``; a batch padded to its own longest history gives the same result as one
  padded to ``max_len`` (SASRec numbers positions from the newest item, or from the oldest real
  item with ``positions="absolute"``, never from the padding);
* ``forward(item_seq)`` (training) returns hidden states ``[batch, seq_len, hidden]``; the score of
  item ``i`` after position ``t`` is ``hidden[:, t] @ output_weight[i]``;
* :meth:`SequenceModel.get_predictions` is the serving path: top-k under ``inference_mode`` with
  padding and optionally already-seen items masked.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from streamrec.errors import ModelError

__all__ = ["LossName", "ModelConfig", "ModelKind", "SequenceModel"]

logger = logging.getLogger(__name__)

ModelKind = Literal["sasrec", "gru4rec"]
LossName = Literal["ce", "gbce", "bpr-max"]
_KINDS = ("sasrec", "gru4rec")
_LOSSES = ("ce", "gbce", "bpr-max")
PositionsName = Literal["recent", "absolute"]
_POSITIONS = ("recent", "absolute")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss of a sequence model; stored as JSON next to every checkpoint."""

    kind: ModelKind
    #: Rows of the item tables = vocabulary items + 1 (index 0 is padding).
    n_items: int
    max_len: int = 200
    hidden: int = 64
    #: Transformer blocks (SASRec) or GRU layers (GRU4Rec).
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    #: Score with the input item embedding (True) or a separate output table.
    tie_embeddings: bool = True
    #: ``ce`` = full softmax over all items; ``gbce`` / ``bpr-max`` use sampled negatives.
    loss: LossName = "ce"
    n_negatives: int = 256
    gbce_t: float = 0.75
    bpr_max_reg: float = 1.0
    #: Std of the normal init of embeddings and linear layers (biases start at zero).
    init_std: float = 0.02
    #: SASRec position embedding: ``recent`` numbers positions from the newest item (it is
    #: always max_len - 1); ``absolute`` from the oldest item in the window (0, 1, ...), so the
    #: model also knows how far into their history a user is, as a GRU does from its state.
    positions: PositionsName = "recent"

    def validate(self) -> ModelConfig:
        """Raise :class:`ModelError` listing every problem; return self when fine."""
        problems = []
        if self.kind not in _KINDS:
            problems.append(f"kind must be one of {_KINDS}, not {self.kind!r}")
        if self.loss not in _LOSSES:
            problems.append(f"loss must be one of {_LOSSES}, not {self.loss!r}")
        if self.n_items < 2:
            problems.append("n_items must count padding plus at least one item")
        if self.max_len < 1 or self.hidden < 1 or self.n_layers < 1:
            problems.append("max_len, hidden and n_layers must be positive")
        if self.kind == "sasrec" and self.hidden % self.n_heads:
            problems.append(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if self.loss != "ce" and self.n_negatives < 1:
            problems.append("sampled losses need n_negatives >= 1")
        if self.positions not in _POSITIONS:
            problems.append(f"positions must be one of {_POSITIONS}, not {self.positions!r}")
        if not 0.0 <= self.gbce_t <= 1.0:
            problems.append("gbce_t must be in [0, 1]")
        if problems:
            raise ModelError("invalid model config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ModelConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(payload) - known
        if unknown:
            raise ModelError(f"unknown model config keys {sorted(unknown)}")
        return cls(**payload).validate()

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes).validate()


class SequenceModel(nn.Module):
    """Base of SASRec and GRU4Rec. Subclasses implement :meth:`_encode` only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.item_embedding = nn.Embedding(config.n_items, config.hidden, padding_idx=0)
        self.output_embedding: nn.Embedding | None = (
            None if config.tie_embeddings else nn.Embedding(config.n_items, config.hidden)
        )
        #: Training-time interaction counts per item; the serving fallback for empty histories.
        self.item_popularity: torch.Tensor
        self.register_buffer("item_popularity", torch.zeros(config.n_items))
        self._init_weights()

    def _init_weights(self) -> None:
        """Normal(0, init_std) embeddings and linear layers, zero biases, zero padding row.
        Subclasses call it again once their own layers exist."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    # -- template methods --------------------------------------------------------------------
    def _encode(
        self, item_seq: torch.Tensor, *, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states ``[batch, seq_len, hidden]`` and, if asked, ``[batch, seq_len]``
        weights of each history position for the last step (None when not applicable)."""
        raise NotImplementedError

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Training path: hidden states ``[batch, seq_len, hidden]`` for left-padded input."""
        self._check_input(item_seq)
        hidden_states, _ = self._encode(item_seq)
        return hidden_states

    # -- scoring -----------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(self.item_embedding.num_embeddings)

    @property
    def device(self) -> torch.device:
        return self.item_embedding.weight.device

    def output_weight(self) -> torch.Tensor:
        """``[n_items, hidden]`` table that scores items (row 0 = padding)."""
        table = self.output_embedding if self.output_embedding is not None else self.item_embedding
        return table.weight

    def scores(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., n_items]`` for hidden states ``[..., hidden]``."""
        return hidden_states @ self.output_weight().T

    def last_hidden(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state after the newest item: ``[batch, hidden]``."""
        return self.forward(item_seq)[:, -1, :]

    @torch.inference_mode()
    def get_predictions(
        self, item_seq: torch.Tensor, k: int, seen: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item indices and scores, each ``[batch, k]``, best first.

        ``seen`` is ``[batch, n_seen]`` item indices (0-padded) never to return; padding is
        always excluded. Slots with nothing left to rank get score ``-inf``.
        """
        was_training = self.training
        self.eval()
        try:
            item_scores = self.scores(self.last_hidden(item_seq)).float()  # [batch, n_items]
        finally:
            self.train(was_training)
        item_scores = mask_scores(item_scores, seen)
        top_scores, top_items = torch.topk(item_scores, min(k, self.n_items - 1), dim=-1)
        return top_items, top_scores

    # -- explanations ------------------------------------------------------------------------
    @torch.inference_mode()
    def explain(
        self, item_seq: torch.Tensor, recommended: torch.Tensor, top_n: int = 3
    ) -> torch.Tensor:
        """For each recommended item, the history positions that contributed most.

        ``item_seq`` ``[batch, seq_len]``, ``recommended`` ``[batch, k]`` item indices; returns
        positions ``[batch, k, top_n]`` into ``item_seq`` (-1 where the history is shorter).
        Contribution of history item j to item r = ``weight_j * (1 + cos(e_j, w_r)) / 2`` where
        ``weight_j`` is the last step's attention to j (SASRec) or 1 (GRU4Rec).
        """
        _, position_weights = self._encode(item_seq, need_weights=True)  # [batch, seq_len]
        if position_weights is None:
            position_weights = torch.ones_like(item_seq, dtype=torch.float32)
        history_vectors = F.normalize(self.item_embedding(item_seq).float(), dim=-1)
        target_vectors = F.normalize(self.output_weight()[recommended].float(), dim=-1)
        cosine = target_vectors @ history_vectors.transpose(1, 2)  # [batch, k, seq_len]
        contribution = position_weights.float()[:, None, :] * (1.0 + cosine) / 2.0
        contribution = contribution.masked_fill((item_seq == 0)[:, None, :], float("-inf"))
        n_keep = min(top_n, item_seq.shape[1])
        top_values, top_positions = torch.topk(contribution, n_keep, dim=-1)
        return top_positions.masked_fill(torch.isinf(top_values), -1)

    # -- growth ------------------------------------------------------------------------------
    def grow_items(self, n_new: int) -> None:
        """Append ``n_new`` item rows initialised to the mean of the existing item rows.

        Old rows are copied unchanged, so indices handed out by the vocabulary stay valid.
        Optimisers holding the old parameters must be rebuilt afterwards.
        """
        if n_new < 0:
            raise ModelError("n_new must be >= 0")
        if n_new == 0:
            return
        self.item_embedding = _grown(self.item_embedding, n_new, padding_idx=0)
        if self.output_embedding is not None:
            self.output_embedding = _grown(self.output_embedding, n_new, padding_idx=None)
        self.item_popularity = torch.cat(
            [self.item_popularity, self.item_popularity.new_zeros(n_new)]
        )
        self.config = self.config.replace(n_items=self.config.n_items + n_new)
        logger.info("grew item tables by %d to %d rows", n_new, self.config.n_items)

    def _check_input(self, item_seq: torch.Tensor) -> None:
        if item_seq.dim() != 2:
            raise ModelError(f"item_seq must be [batch, seq_len], got {tuple(item_seq.shape)}")
        if item_seq.shape[1] > self.config.max_len:
            raise ModelError(f"seq_len {item_seq.shape[1]} > max_len {self.config.max_len}")


def mask_scores(item_scores: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
    """Set padding (column 0) and ``seen`` item indices ``[batch, n_seen]`` to ``-inf``."""
    item_scores = item_scores.clone()
    item_scores[:, 0] = float("-inf")
    if seen is not None and seen.numel():
        item_scores.scatter_(1, seen.to(item_scores.device), float("-inf"))
    return item_scores


def _grown(table: nn.Embedding, n_new: int, padding_idx: int | None) -> nn.Embedding:
    old_weight = table.weight.detach()  # [n_old, hidden]
    real_rows = old_weight[1:] if padding_idx == 0 and old_weight.shape[0] > 1 else old_weight
    mean_row = real_rows.mean(dim=0, keepdim=True)  # [1, hidden]
    grown = nn.Embedding(
        old_weight.shape[0] + n_new,
        old_weight.shape[1],
        padding_idx=padding_idx,
        device=old_weight.device,
        dtype=old_weight.dtype,
    )
    with torch.no_grad():
        grown.weight.copy_(torch.cat([old_weight, mean_row.expand(n_new, -1)]))
    grown.weight.requires_grad_(table.weight.requires_grad)
    return grown
