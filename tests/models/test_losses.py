"""The fused, chunked output-layer cross-entropy is exact: same loss and gradients as
``F.cross_entropy(h @ W.T)``, whatever the chunking, and it never makes padding a class."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamrec.models.losses import full_softmax_ce


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_matches_plain_cross_entropy_in_value_and_gradients(chunk: int) -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(130, 16, generator=generator, requires_grad=True)
    weight = torch.randn(41, 16, generator=generator, requires_grad=True)  # row 0 = padding
    targets = torch.randint(1, 41, (130,), generator=generator)
    fused = full_softmax_ce(hidden, weight, targets, chunk=chunk)
    fused.backward()
    fused_grads = hidden.grad.clone(), weight.grad.clone()  # type: ignore[union-attr]
    hidden.grad = weight.grad = None
    plain = F.cross_entropy(hidden @ weight[1:].T, targets - 1)
    plain.backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(fused_grads[0], hidden.grad)
    torch.testing.assert_close(fused_grads[1], weight.grad)
    assert torch.all(fused_grads[1][0] == 0)  # padding row: never a class, no gradient


def test_gradcheck_in_double_and_large_logits_stay_finite() -> None:
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 6, (9,), generator=generator)
    assert torch.autograd.gradcheck(
        lambda h, w: full_softmax_ce(h, w, targets, chunk=4), (hidden, weight)
    )
    big = torch.full((3, 2), 300.0, requires_grad=True)  # exp(300 * 300) overflows unless shifted
    loss = full_softmax_ce(big, torch.randn(5, 2).abs() * 300, torch.tensor([1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()  # type: ignore[arg-type]


def test_no_gradient_work_without_grad() -> None:
    with torch.no_grad():
        loss = full_softmax_ce(torch.randn(5, 3), torch.randn(4, 3), torch.tensor([1, 2, 3, 1, 2]))
    assert loss.ndim == 0 and not loss.requires_grad
