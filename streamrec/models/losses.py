"""Training objectives for next-item prediction, on the positions that have a target.

* ``ce``: softmax cross-entropy over the whole catalogue (no sampling). Costs one
  ``[positions, n_items]`` matrix product; on ML-1M-sized catalogues it is both the most accurate
  and, thanks to dense BLAS, cheap enough on CPU.
* ``gbce``: generalised binary cross-entropy (Petrov & Macdonald 2023). With ``k`` uniform
  negatives out of ``n`` items the sampling rate is ``alpha = k / (n - 1)``; the positive's
  probability is raised to ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)``, i.e. the positive
  term becomes ``beta * log sigmoid(s+)`` (t=0: beta=1, plain BCE; t=1: beta=alpha).
  Computed as ``-log(sigmoid(s+)^beta) = softplus(-s+) * beta`` for numerical stability.
* ``bpr-max``: GRU4Rec's BPR-max (Hidasi & Karatzoglou 2018):
  ``-log sum_j softmax(s-)_j sigmoid(s+ - s-_j) + reg * sum_j softmax(s-)_j (s-_j)^2``.

Sampled losses share one set of uniform negatives per batch (a ``[positions, k]`` product instead
of a per-position gather); a negative equal to the position's target is masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamrec.models.base import ModelConfig, SequenceModel

__all__ = ["bpr_max_loss", "full_softmax_ce", "gbce_loss", "sequence_loss"]


def full_softmax_ce(
    hidden_states: torch.Tensor, output_weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy; ``hidden_states`` ``[n, hidden]``, ``targets`` ``[n]`` in 1..V-1."""
    logits = hidden_states @ output_weight[1:].T  # [n, n_items - 1]: padding never a class
    return F.cross_entropy(logits.float(), targets - 1)


def gbce_loss(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor, n_items: int, t: float
) -> torch.Tensor:
    """gBCE; ``positive_logits`` ``[n]``, ``negative_logits`` ``[n, k]`` (-inf = masked)."""
    n_negatives = negative_logits.shape[1]
    alpha = n_negatives / max(n_items - 1, 1)
    beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
    positive_term = beta * F.softplus(-positive_logits.float())  # -log sigmoid(s+)^beta
    negative_term = F.softplus(negative_logits.float()).sum(dim=1)  # -log(1 - sigmoid(s-))
    return (positive_term + negative_term).mean()


def bpr_max_loss(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor, reg: float
) -> torch.Tensor:
    """BPR-max; ``negative_logits`` ``[n, k]`` with ``-inf`` for masked negatives."""
    negative_logits = negative_logits.float()
    weights = negative_logits.softmax(dim=1)  # [n, k]
    finite_negatives = negative_logits.nan_to_num(neginf=0.0)
    pairwise = torch.sigmoid(positive_logits.float()[:, None] - finite_negatives)
    ranking = -torch.log((weights * pairwise).sum(dim=1) + 1e-10)
    regulariser = reg * (weights * finite_negatives.square()).sum(dim=1)
    return (ranking + regulariser).mean()


def sequence_loss(
    model: SequenceModel,
    item_seq: torch.Tensor,
    target_seq: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Loss of ``model`` on left-padded inputs/targets ``[batch, seq_len]`` (target 0 = none)."""
    config: ModelConfig = model.config
    hidden_states = model(item_seq)  # [batch, seq_len, hidden]
    has_target = target_seq != 0  # [batch, seq_len]
    hidden_valid = hidden_states[has_target]  # [n, hidden]
    targets = target_seq[has_target]  # [n]
    output_weight = model.output_weight()  # [n_items, hidden]
    if config.loss == "ce":
        return full_softmax_ce(hidden_valid, output_weight, targets)
    negatives = torch.randint(
        1, model.n_items, (config.n_negatives,), device=item_seq.device, generator=generator
    )  # [k]
    positive_logits = (hidden_valid * output_weight[targets]).sum(dim=-1)  # [n]
    negative_logits = hidden_valid @ output_weight[negatives].T  # [n, k]
    negative_logits = negative_logits.masked_fill(
        negatives[None, :] == targets[:, None], float("-inf")
    )
    if config.loss == "gbce":
        return gbce_loss(positive_logits, negative_logits, model.n_items, config.gbce_t)
    return bpr_max_loss(positive_logits, negative_logits, config.bpr_max_reg)
