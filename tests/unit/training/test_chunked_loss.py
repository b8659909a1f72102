"""The chunked cross-entropy (components/training/loss.py) against torch's: same loss, same gradients."""

import pytest
import torch

from components.training import loss as loss_mod
from components.training.loss import chunked_cross_entropy


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 7 * 50)  # 7 tokens a chunk over a 50-word vocabulary


def inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(40, 16, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(50, 16, generator=g) * 2).to(dtype)
    return h, w, torch.randint(0, 50, (40,), generator=g)


def reference(h, w, t):
    """torch's mean cross-entropy over the full logits, and its gradient under an upstream 3."""
    ref_h = h.detach().clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy((ref_h @ w.t()).float(), t)
    (loss * 3).backward()
    return loss.detach(), ref_h.grad


def test_loss_and_gradient_equal_torch_cross_entropy(small_chunks):
    """The summed loss; over the token count (as lm_loss takes it), torch's mean and its gradient."""
    h, w, t = inputs()
    summed = chunked_cross_entropy(h, w, t)
    loss = summed / len(t)
    (loss * 3).backward()  # an upstream gradient other than 1
    ref_loss, ref_grad = reference(h, w, t)
    assert float(summed.detach()) == pytest.approx(float(ref_loss) * len(t), rel=1e-6)
    assert float(loss.detach()) == pytest.approx(float(ref_loss), rel=1e-6)
    assert torch.allclose(h.grad, ref_grad, atol=1e-6, rtol=1e-5)


def test_bf16_within_bf16_rounding(small_chunks):
    h, w, t = inputs(torch.bfloat16)
    loss = chunked_cross_entropy(h, w, t) / len(t)
    loss.backward()
    ref_loss, ref_grad = reference(h, w, t)
    assert float(loss.detach()) == pytest.approx(float(ref_loss), rel=2e-2)
    assert torch.allclose(h.grad.float(), ref_grad.float() / 3, atol=2e-3, rtol=5e-2)


def test_a_trainable_projection_is_refused():
    h, w, t = inputs()
    with pytest.raises(ValueError, match="frozen"):
        chunked_cross_entropy(h, w.requires_grad_(), t)
