"""SASRec: causal self-attention over item embeddings with learned positions (Kang & McAuley 2018).

Each block is pre-norm: ``q = LN(x)``, ``x = q + Attn(q, x, x)``, then ``x = LN(x)`` and
``x = x + FFN(x)``; padded positions are zeroed after every block and a final LayerNorm follows.
A query at position t sees keys 0..t that are real items (and always itself, so left padding
never produces an empty softmax). Trained with full-softmax cross-entropy over all items at every
position this is "SASRec+" (Klenitskiy & Vasilev 2023); gBCE gives gSASRec (Petrov & Macdonald
2023).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from streamrec.models.base import ModelConfig, SequenceModel

__all__ = ["SASRec", "causal_padding_mask"]


def causal_padding_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """Boolean ``[batch, seq_len, seq_len]``: True where query t may attend key s.

    Allowed: ``s <= t`` and key s is a real item, plus the diagonal (keeps pad rows finite).
    """
    seq_len = item_seq.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=item_seq.device).tril()
    key_is_item = (item_seq != 0)[:, None, :]  # [batch, 1, seq_len]
    diagonal = torch.eye(seq_len, dtype=torch.bool, device=item_seq.device)
    return causal & (key_is_item | diagonal)  # [batch, seq_len, seq_len]


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(hidden, hidden)
        self.key_value = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(
        self,
        query_input: torch.Tensor,
        kv_input: torch.Tensor,
        attn_bias: torch.Tensor,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``query_input`` ``[batch, n_queries, hidden]`` (the newest n_queries positions),
        ``kv_input`` ``[batch, seq_len, hidden]``, ``attn_bias`` ``[batch, 1, n_queries,
        seq_len]`` additive (0 or -inf)."""
        batch, n_queries, hidden = query_input.shape
        seq_len = kv_input.shape[1]
        head_dim = hidden // self.n_heads

        def heads(tensor: torch.Tensor, length: int) -> torch.Tensor:
            # [batch, length, hidden] -> [batch, heads, length, head_dim]
            return tensor.view(batch, length, self.n_heads, head_dim).transpose(1, 2)

        queries = heads(self.query(query_input), n_queries)
        key_part, value_part = self.key_value(kv_input).chunk(2, dim=-1)
        keys, values = heads(key_part, seq_len), heads(value_part, seq_len)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            logits = queries @ keys.transpose(-2, -1) / math.sqrt(head_dim) + attn_bias
            weights = logits.softmax(dim=-1)  # [batch, heads, n_queries, seq_len]
            attended = F.dropout(weights, dropout_p, self.training) @ values
            mean_weights: torch.Tensor | None = weights.mean(dim=1)  # [batch, n_queries, seq]
        else:
            attended = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=attn_bias, dropout_p=dropout_p
            )
            mean_weights = None
        merged = attended.transpose(1, 2).reshape(batch, n_queries, hidden)
        return self.out(merged), mean_weights


class _Block(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attention = _SelfAttention(hidden, n_heads, dropout)
        self.attention_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        states: torch.Tensor,
        attn_bias: torch.Tensor,
        is_item: torch.Tensor,
        need_weights: bool,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``last_only`` computes the newest position only (serving): ``[batch, 1, hidden]``."""
        normed = self.attention_norm(states)  # [batch, seq_len, hidden]
        if last_only:
            queries = normed[:, -1:]  # [batch, 1, hidden]
            attn_bias, is_item = attn_bias[:, :, -1:], is_item[:, -1:]
        else:
            queries = normed
        attended, weights = self.attention(queries, states, attn_bias, need_weights)
        states = queries + self.attention_dropout(attended)
        states = self.ffn_norm(states)
        states = states + self.ffn(states)
        return states * is_item, weights


class SASRec(SequenceModel):
    """Self-attentive sequential recommender."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden)
        self.input_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(config.hidden, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self._init_weights()

    def last_hidden(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Newest position only; the last block runs one query (the serving fast path)."""
        self._check_input(item_seq)
        hidden_states, _ = self._encode(item_seq, last_only=True)  # [batch, 1, hidden]
        return hidden_states[:, -1, :]

    def _encode(
        self, item_seq: torch.Tensor, *, need_weights: bool = False, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        seq_len = item_seq.shape[1]
        max_len = self.config.max_len
        is_real = item_seq != 0
        if self.config.positions == "absolute":
            # 0 at each row's oldest real item (rows are left-padded): [batch, seq_len]
            pads = seq_len - is_real.sum(dim=1, keepdim=True)
            steps = torch.arange(seq_len, device=item_seq.device)[None]
            position_states = self.position_embedding((steps - pads).clamp(min=0))
        else:
            # Right-aligned: the newest item is always at max_len - 1. [1, seq_len, hidden]
            steps = torch.arange(max_len - seq_len, max_len, device=item_seq.device)
            position_states = self.position_embedding(steps)[None]
        is_item = is_real.unsqueeze(-1).to(self.item_embedding.weight.dtype)
        states = self.item_embedding(item_seq) * math.sqrt(self.config.hidden)
        states = self.input_dropout(states + position_states)
        states = states * is_item  # [batch, seq_len, hidden]
        allowed = causal_padding_mask(item_seq)[:, None]  # [batch, 1, seq_len, seq_len]
        attn_bias = torch.zeros(allowed.shape, dtype=states.dtype, device=states.device)
        attn_bias.masked_fill_(~allowed, float("-inf"))  # built once, shared by every block
        last_weights = None
        for index, block in enumerate(self.blocks):
            is_last = index == len(self.blocks) - 1
            states, weights = block(
                states, attn_bias, is_item, need_weights and is_last, last_only and is_last
            )
            if weights is not None:
                last_weights = weights[:, -1, :]  # [batch, seq_len]: newest step's attention
        return self.final_norm(states), last_weights
