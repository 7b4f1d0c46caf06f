"""Training objectives for next-item prediction, on the positions that have a target.

* ``ce``: softmax cross-entropy over the whole catalogue (no sampling). Costs one
  ``[positions, n_items]`` matrix product; on ML-1M-sized catalogues it is both the most accurate
  and, thanks to dense BLAS, cheap enough on CPU. :class:`LinearCrossEntropy` fuses the output
  layer with the loss (as Liger's fused linear cross-entropy does): the logits are computed
  ``chunk`` rows at a time and turned into their gradient in place while the chunk is in cache,
  so the full ``[positions, n_items]`` matrix never exists. That is exact (same loss and
  gradients) and on CPU about 2.3x faster than ``F.cross_entropy(h @ W.T)`` with its separate
  log-softmax, NLL and backward passes over the whole matrix; it also bounds memory on GPUs with
  large catalogues.
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

__all__ = [
    "LinearCrossEntropy",
    "bpr_max_loss",
    "full_softmax_ce",
    "gbce_loss",
    "sequence_loss",
]

#: Rows of logits materialised at once by :class:`LinearCrossEntropy` (a ``[chunk, n_items]``
#: block; 1024 x 3.4k items = 14 MB, measured flat between 256 and 2048 rows on CPU).
CE_CHUNK = 1024


class LinearCrossEntropy(torch.autograd.Function):
    """``mean(cross_entropy(hidden @ weight.T, targets))`` with the gradients computed in the
    forward pass, chunk by chunk (see the module docstring). Computed in float32 (or the
    inputs' dtype when wider), returned in the inputs' dtypes."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        hidden32, weight32 = hidden.to(dtype), weight.to(dtype)
        n = hidden.shape[0]
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        grad_hidden = torch.empty_like(hidden32) if need_hidden else None
        grad_weight = torch.zeros_like(weight32) if need_weight else None
        total = hidden32.new_zeros(())
        for start in range(0, n, chunk):
            rows = hidden32[start : start + chunk]  # [c, d]
            target = targets[start : start + chunk]  # [c]
            logits = rows @ weight32.T  # [c, V]
            top = logits.amax(dim=1, keepdim=True)
            target_logit = logits.gather(1, target[:, None])
            probs = logits.sub_(top).exp_()  # in place: the block becomes softmax numerators
            norm = probs.sum(dim=1, keepdim=True)
            total += (norm.log() + top - target_logit).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            grad_logits = probs.div_(norm)  # softmax
            grad_logits.scatter_add_(
                1, target[:, None], grad_logits.new_full((len(target), 1), -1.0)
            )
            grad_logits.div_(n)  # d mean / d logits = (softmax - onehot) / n
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = grad_logits @ weight32
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T, rows)
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else hidden.new_empty(0),
            grad_weight if grad_weight is not None else weight.new_empty(0),
        )
        ctx.dtypes = (hidden.dtype, weight.dtype)  # type: ignore[attr-defined]
        return total / max(n, 1)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_hidden, grad_weight = ctx.saved_tensors  # type: ignore[attr-defined]
        hidden_dtype, weight_dtype = ctx.dtypes  # type: ignore[attr-defined]
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        return (
            (grad_hidden * grad_output).to(hidden_dtype) if need_hidden else None,
            (grad_weight * grad_output).to(weight_dtype) if need_weight else None,
            None,
            None,
        )


def full_softmax_ce(
    hidden_states: torch.Tensor,
    output_weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = CE_CHUNK,
) -> torch.Tensor:
    """Mean cross-entropy; ``hidden_states`` ``[n, hidden]``, ``targets`` ``[n]`` in 1..V-1
    (row 0 of ``output_weight`` is padding, never a class)."""
    loss: torch.Tensor = LinearCrossEntropy.apply(
        hidden_states, output_weight[1:], targets - 1, chunk
    )
    return loss


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
