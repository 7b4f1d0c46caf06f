"""GRU4Rec: a GRU over item embeddings (Hidasi et al. 2016), trained like a causal LM.

The GRU must start from a zero state at the first *real* item, whatever the padding. Inputs are
left-padded (the shared convention), so the batch is rotated to right padding before the GRU and
back afterwards: the result for a history never depends on how much padding a batch has.
With full-softmax cross-entropy this is the strong GRU4Rec baseline of Klenitskiy & Vasilev
(2023); BPR-max with sampled negatives is the original session-based objective.
"""

from __future__ import annotations

import torch
from torch import nn

from streamrec.models.base import ModelConfig, SequenceModel

__all__ = ["GRU4Rec"]


def _rotation(item_seq: torch.Tensor, to_right_padding: bool) -> torch.Tensor:
    """Gather index ``[batch, seq_len]`` that moves left padding to the right (or back)."""
    seq_len = item_seq.shape[1]
    n_pad = (item_seq == 0).sum(dim=1, keepdim=True)  # [batch, 1]
    steps = torch.arange(seq_len, device=item_seq.device)[None, :]  # [1, seq_len]
    shift = n_pad if to_right_padding else -n_pad
    return (steps + shift) % seq_len


class GRU4Rec(SequenceModel):
    """Recurrent next-item model; ``n_layers`` stacked GRU layers of width ``hidden``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.input_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(
            config.hidden,
            config.hidden,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        self.output_dropout = nn.Dropout(config.dropout)

    def _encode(
        self, item_seq: torch.Tensor, *, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.config.hidden
        embedded = self.input_dropout(self.item_embedding(item_seq))  # [batch, seq_len, hidden]
        to_right = _rotation(item_seq, to_right_padding=True)[..., None].expand(-1, -1, hidden)
        right_padded = embedded.gather(1, to_right)  # real items first, padding last
        outputs, _ = self.gru(right_padded)  # [batch, seq_len, hidden]
        to_left = _rotation(item_seq, to_right_padding=False)[..., None].expand(-1, -1, hidden)
        states = outputs.gather(1, to_left) * (item_seq != 0).unsqueeze(-1)
        return self.output_dropout(states), None
