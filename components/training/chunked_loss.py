"""Cross-entropy through a frozen vocabulary projection, a chunk of tokens at a time.

The logits of a step (label tokens x vocabulary: 1,400 x 49,152 floats is 275 MB for the embedded model) are
never held whole: each chunk's logits give its share of the loss and, at once, the loss's gradient with respect
to the hidden states (softmax - one-hot) @ W, so nothing of them is kept for backward. Same FLOPs as computing
the logits and backpropagating through them; the memory is a chunk's. Only for a head whose weight does not
train (LoRA and the other adapter methods; the tied embedding of full fine-tuning trains and takes the plain path).
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MB in fp32): small enough to stay in the allocator's cache


class _ChunkedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, target, chunk: int):
        n = h.shape[0]
        total = h.new_zeros((), dtype=torch.float32)
        grad_h = torch.empty_like(h)
        for s in range(0, n, chunk):
            logits = (h[s : s + chunk] @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            t = target[s : s + chunk]
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            logits.sub_(lse[:, None]).exp_()  # softmax, in place
            logits[torch.arange(len(t)), t] -= 1
            grad_h[s : s + chunk] = (logits.to(weight.dtype) @ weight).to(h.dtype)
        ctx.save_for_backward(grad_h)
        ctx.n = n
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return grad_h * (grad_out / ctx.n).to(grad_h.dtype), None, None, None


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `target` (h: tokens x hidden, weight: vocab x hidden, frozen)."""
    if weight.requires_grad:
        raise ValueError("chunked_cross_entropy needs a frozen vocabulary projection")
    if h.dtype != weight.dtype:
        h = h.to(weight.dtype)  # autocast's bf16 hidden states against a bf16-stored head, or the reverse
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _ChunkedCE.apply(h, weight, target, chunk)
