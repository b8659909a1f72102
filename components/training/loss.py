"""The loss at the answer positions: next-token cross-entropy over the label tokens, with the vocabulary projection
computed only where there is a label (prompt, padding and the last position need no logits) and no KV cache built.

`summed_label_loss` is the one computation: training averages it (`lm_loss`, and `step_backward` over a step's
micro-batches), evaluation adds it up over its batches (components/evaluation/evaluate.py). `sharded_loss` is one
rank's share of a data-parallel step.

Through a frozen vocabulary projection the logits of a step (label tokens x vocabulary: 1,400 x 49,152 floats is
275 MB for the embedded model) are never held whole (`chunked_cross_entropy`): each chunk's logits give its share of
the loss and, at once, the loss's gradient with respect to the hidden states (softmax - one-hot) @ W, so nothing of
them is kept for backward. Same FLOPs as computing the logits and backpropagating through them; the memory is a
chunk's. Only for a head whose weight does not train (LoRA and the other adapter methods; the tied embedding of full
fine-tuning trains and takes the plain path).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from components.data.prepare import IGNORE_INDEX
from components.training import distributed as dist
from components.training.batches import make_batch, micro_batches

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
        return total

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), None, None, None


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of `h @ weight.T` against `target` (h: tokens x hidden, weight: vocab x hidden, frozen)."""
    if weight.requires_grad:
        raise ValueError("chunked_cross_entropy needs a frozen vocabulary projection")
    if h.dtype != weight.dtype:
        h = h.to(weight.dtype)  # autocast's bf16 hidden states against a bf16-stored head, or the reverse
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _ChunkedCE.apply(h, weight, target, chunk)


def decoder_and_head(model):
    """(decoder, lm_head) of a causal LM whose adapters sit inside its modules (LoRA & co, full, selective);
    None where the PEFT wrapper's forward does more (prompt learning adds virtual tokens, AdaLoRA a regulariser)."""
    from components.model import kv_prefix

    if kv_prefix.is_prompt_learning(model):
        return None
    if getattr(model, "peft_config", None):
        if str(model.active_peft_config.peft_type).endswith("ADALORA"):
            return None
        model = model.get_base_model()
    decoder, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    return (decoder, head) if decoder is not None and head is not None else None


def _frozen_plain_linear(head) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def summed_label_loss(model, batch: dict, autocast=None) -> tuple[torch.Tensor, int]:
    """(the summed next-token cross-entropy over the batch's label tokens, how many label tokens there are).

    Where the model splits into a decoder and a vocabulary head (`decoder_and_head`), logits only at the label
    positions: with gradients, through a frozen plain head a chunk at a time (`chunked_cross_entropy`), else all at
    once; without gradients (evaluation), a chunk at a time through whatever the head is, the chunks' sums added in
    float64 (the sum is then a CPU tensor). Otherwise the model's own logits at every position (prompt learning
    prepends virtual positions: the batch's are the last ones)."""
    ce = torch.nn.functional.cross_entropy
    target = batch["labels"][:, 1:]
    keep = target != IGNORE_INDEX
    parts = decoder_and_head(model)
    with autocast or nullcontext():
        if parts is None:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs, use_cache=False).logits[:, -batch["labels"].shape[1]:]
            return (ce(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE_INDEX,
                       reduction="sum"), int(keep.sum()))
        decoder, head = parts
        mask = batch.get("attention_mask")
        if mask is not None and bool(mask.all()):
            mask = None  # no padding: plain causal attention
        h = decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch.get("position_ids"),
                    use_cache=False).last_hidden_state[:, :-1][keep]
        target = target[keep]
        if not torch.is_grad_enabled():
            chunk = max(1, CHUNK_ELEMENTS // head.weight.shape[0])
            total = 0.0
            for s in range(0, len(target), chunk):
                total += float(ce(head(h[s : s + chunk]).float(), target[s : s + chunk], reduction="sum"))
            return torch.tensor(total, dtype=torch.float64), len(target)
        if _frozen_plain_linear(head):  # logits a chunk at a time, never held whole
            return chunked_cross_entropy(h, head.weight, target), len(target)
        return ce(head(h).float(), target, reduction="sum"), len(target)


def lm_loss(model, batch: dict, autocast=None):
    """Mean cross-entropy over the label tokens, as `model(**batch).loss`: `summed_label_loss` over its count; the
    model's own loss where its forward does more than decoder and head (prompt learning, AdaLoRA's regulariser)."""
    if decoder_and_head(model) is None:
        with autocast or nullcontext():
            return model(**batch, use_cache=False).loss
    total, count = summed_label_loss(model, batch, autocast)
    return total / count


def step_backward(run, rows: list[dict]) -> tuple[float, int, int]:
    """Forward and backward over one step's rows (`run`: the TrainRun), a micro-batch at a time
    (train.micro_batch_tokens): each micro-batch's mean loss weighs by its share of the step's label tokens, so the
    gradients add up to the whole batch's. The step's loss is then scaled by train.loss_norm: 1 (batch: the step's mean), or the step's label
    tokens over the schedule's mean (tokens: the summed loss / a constant, so every token weighs the same).
    Returns (the step's mean loss over its label tokens, real tokens, computed tokens)."""
    cfg = run.params.train
    made = [make_batch(g, run.tokenizer.pad_token_id, cfg.packing, run.max_length)
            for g in micro_batches(rows, cfg.micro_batch_tokens, cfg.packing)]
    counts = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b, _ in made]
    total = max(sum(counts), 1)
    scale = 1.0 if cfg.loss_norm == "batch" else total / run.label_mean
    value, computed = 0.0, 0
    for (batch, _), count in zip(made, counts):
        batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
        loss = lm_loss(run.model, batch, run.autocast)
        value += float(loss.detach()) * count / total
        loss = loss * (count / total * scale)
        (loss if run.scaler is None else run.scaler.scale(loss)).backward()
        computed += batch["input_ids"].numel()
    return value, sum(real for _, real in made), computed


def sharded_loss(model, batch: dict, autocast, world: int, per_step: float | None = None):
    """This rank's share of a step's loss, scaled so DDP's gradient average is the whole batch's gradient.

    Each rank's loss is its summed token cross-entropy over the GLOBAL label-token count divided by
    `world` (transformers' `num_items_in_batch`, which PEFT passes through): the average over ranks is
    then the mean over every label token of the global batch, as one process computes it. With
    `per_step` (train.loss_norm=tokens: the schedule's mean label tokens per step) that constant
    divides instead of the step's own count.
    Returns (the loss to backward, the global mean loss, identical on every rank).
    """
    count = dist.all_reduce_sum((batch["labels"][:, 1:] != IGNORE_INDEX).sum().to(torch.float32))
    denom = float(count) if per_step is None else per_step
    with autocast:
        loss = model(**batch, num_items_in_batch=denom / world).loss
    return loss, float(dist.all_reduce_sum(loss.detach().clone())) / world * denom / float(count)
