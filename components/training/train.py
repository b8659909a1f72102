"""Train stage: a plain, seeded training loop with length-grouped batches and checkpoints."""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from components.training import distributed as dist
from components.methods import Context, after_step, get_method, trains
from components.training.checkpoints import (clear_checkpoints, fingerprint, latest_checkpoint, load_checkpoint, made_from,
                                             save_checkpoint, trainable_state)
from components.model.trained import count_parameters, save_trained
from components.data.prepare import IGNORE_INDEX, load_prepared, prepared_max_length
from components.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from components.config.params import Params
from components.core.runtime import autocast_for, resolve_device, set_seed, set_threads
from components.training import budget as budget_plan
from components.training.chunked_loss import chunked_cross_entropy
from components.training.precision import decide as decide_precision


class Health:
    """Training health: NaN/inf loss or a spike stops training; the best weights so far are kept.

    A spike is a loss above the first loss and above `factor` x the lower of the first loss and the
    lower quartile of the previous 20 losses, checked once `warmup` steps have run. The quartile, not the
    mean, so that a run that blew up during warmup is still caught when the detector arms: its blown-up
    losses are in the window too, and they lift a mean (a P-Tuning v2 run at lr 1e-2 on dolly_open_qa went
    from 3.3 to 9.9 at step 9 of a 10-step warmup, with a first loss of 5.6, and trained on at ~9-12).

    A collapse is a plateau, not a spike: a run whose first loss was below `collapse` x ln(vocab_size) (the
    loss of a uniform guess over the vocabulary) and whose median over the last `window` losses is now above
    it (a P-Tuning v2 run at lr 3e-2 on dolly_open_qa: first loss 5.6, then 10-15 from step 5, never the 3x of a
    spike, near ln(49,152) = 10.8). A model that starts near the uniform loss (random weights) cannot collapse.
    """

    def __init__(self, factor: float, warmup: int, window: int = 20, vocab_size: int | None = None,
                 collapse: float = 0.8):
        self.factor, self.warmup, self.window = factor, warmup, window
        self.uniform = math.log(vocab_size) if vocab_size and vocab_size > 1 else None
        self.collapse = collapse
        self.history: list[float] = []
        self.problem: dict | None = None

    def check(self, step: int, value: float) -> bool:
        """Record a loss; False (and self.problem set) when training must stop."""
        if not math.isfinite(value):
            self.problem = {"reason": "non-finite loss", "step": step, "value": value}
        elif len(self.history) >= self.warmup:
            recent = sorted(self.history[-self.window:])
            first = self.history[0]
            ref = min(recent[len(recent) // 4], first)
            if value > self.factor * ref and value > first:
                self.problem = {"reason": f"loss spike above {self.factor:g}x the reference loss {ref:.4g}",
                                "step": step, "value": value}
            elif self.uniform is not None:
                window = sorted(self.history[-(self.window - 1):] + [value])
                median = window[len(window) // 2]
                floor = self.collapse * self.uniform
                if first < floor < median:
                    self.problem = {"reason": f"collapsed: median loss {median:.4g} over the last {len(window)} steps "
                                              f"(first loss {first:.4g}) is near a uniform guess's {self.uniform:.4g} "
                                              "(ln vocabulary size)", "step": step, "value": value}
        if self.problem:
            return False
        self.history.append(value)
        return True


def batch_schedule(lengths: list[int], batch_size: int, steps: int, seed: int, group: bool = True,
                   tokens: int | None = None, packed: bool = False) -> list[list[int]]:
    """Index lists for every step: shuffle, group similar lengths (less padding), shuffle batches.

    group=False: plain random batches (consecutive slices of each epoch's permutation).
    tokens: a token budget per step instead of `batch_size` rows: rows join a batch while the tokens it
    computes (rows x its longest row; packed: their sum) stay within the budget; a row longer than the
    budget is a batch of its own."""
    rng = np.random.default_rng(seed)
    n = len(lengths)
    if tokens is not None:  # rows a batch holds at the median length: sizes the length-sorted chunks
        batch_size = max(1, tokens // max(1, int(np.median(lengths))))
    bs = min(batch_size, n)
    out: list[list[int]] = []
    while len(out) < steps:
        perm = rng.permutation(n)
        if tokens is not None:
            if group:
                mega = bs * 16
                perm = [i for s in range(0, n, mega) for i in sorted(perm[s : s + mega].tolist(), key=lambda i: -lengths[i])]
            batches = fill_budget([int(i) for i in perm], lengths, tokens, packed)
            out += [batches[b] for b in (rng.permutation(len(batches)) if group else range(len(batches)))]
            continue
        if not group:
            out += [perm[j : j + bs].tolist() for j in range(0, n - bs + 1 if n >= bs else 1, bs)]
            continue
        mega = bs * 16
        batches = []
        for s in range(0, n - bs + 1 if n >= bs else 1, mega):
            chunk = sorted(perm[s : s + mega].tolist(), key=lambda i: -lengths[i])
            batches += [chunk[j : j + bs] for j in range(0, len(chunk) - bs + 1, bs)]
        for b in rng.permutation(len(batches)):
            out.append(batches[b])
    return out[:steps]


MAX_BUDGET_EPOCHS = 20  # train.budget_minutes with neither steps nor epochs set: at most this many passes


def steps_for_epochs(lengths: list[int], cfg, seed: int, epochs: float) -> int:
    """The steps whose batches hold `epochs` x the train rows, at the schedule's mean rows per step."""
    sched = batch_schedule(lengths, cfg.batch_size, len(lengths), seed, cfg.group_by_length, cfg.batch_tokens,
                           cfg.packing)  # at least one pass: every batch holds a row or more
    return max(1, math.ceil(epochs * len(lengths) / float(np.mean([len(b) for b in sched]))))


def planned_steps(cfg, lengths: list[int], seed: int) -> int:
    """train.steps; else the steps of train.epochs passes (null: 1, or MAX_BUDGET_EPOCHS under a time budget, which
    then ends the run)."""
    if cfg.steps is not None:
        return cfg.steps
    return steps_for_epochs(lengths, cfg, seed, cfg.epochs or (MAX_BUDGET_EPOCHS if cfg.budget_minutes else 1.0))


def fill_budget(order: list[int], lengths: list[int], tokens: int, packed: bool = False) -> list[list[int]]:
    """`order` cut into consecutive batches, each as many rows as fit `tokens` computed tokens
    (rows x the longest, or the sum when packed); a row over the budget alone."""
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = total = 0
    for i in order:
        n = lengths[i]
        cost = total + n if packed else (len(cur) + 1) * max(longest, n)
        if cur and cost > tokens:
            batches.append(cur)
            cur, longest, total = [], 0, 0
        cur.append(i)
        longest, total = max(longest, n), total + n
    if cur:
        batches.append(cur)
    return batches


def collate(rows: list[dict], pad_id: int):
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _fill_rows(lengths: list[int], k: int) -> list[list[int]]:
    """Indices in k rows of about equal fill: longest first, each into the emptiest row."""
    rows: list[list[int]] = [[] for _ in range(k)]
    fill = [0] * k
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        j = fill.index(min(fill))
        rows[j].append(i)
        fill[j] += lengths[i]
    return rows


def pack(rows: list[dict], pad_id: int, capacity: int):
    """A step's examples end to end in rows of about `capacity` tokens, no padding between them: position ids
    restart at 0 for each example, which makes transformers build a block-diagonal causal mask (each example
    attends only to itself, as in its own row). Of the row counts from tokens // capacity up, the one that
    computes the fewest tokens (rows x the fullest row) wins. Each example's first label is masked: it would be
    the target of the previous example's last token. Same loss as `collate`."""
    import torch

    lengths = [len(r["input_ids"]) for r in rows]
    layouts = [_fill_rows(lengths, k) for k in range(max(1, sum(lengths) // capacity), len(rows) + 1)]
    cost = lambda lay: len(lay) * max(sum(lengths[i] for i in row) for row in lay)  # noqa: E731
    bins = [[rows[i] for i in row] for row in min(layouts, key=cost)]
    width = max(sum(len(r["input_ids"]) for r in b) for b in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.arange(width).repeat(len(bins), 1)  # the tail padding continues the last example's positions
    for b, members in enumerate(bins):
        at = 0
        for r in members:
            n = len(r["input_ids"])
            ids[b, at : at + n] = torch.tensor(r["input_ids"])
            labels[b, at + 1 : at + n] = torch.tensor(r["labels"][1:])
            pos[b, at:] = torch.arange(width - at)
            at += n
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def make_batch(rows: list[dict], pad_id: int, packing: bool, capacity: int):
    """(batch, real tokens): packed rows (`pack`) or rows padded to the longest (`collate`)."""
    batch = pack(rows, pad_id, capacity) if packing else collate(rows, pad_id)
    return batch, sum(len(r["input_ids"]) for r in rows)


def _decoder_and_head(model):
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


def lm_loss(model, batch: dict, autocast=None):
    """Mean cross-entropy over the label tokens, as `model(**batch).loss`, with the vocabulary projection computed
    only where there is a label (prompt, padding and the last position need no logits), a chunk of tokens at a time
    when the projection is frozen, and no KV cache built."""
    import torch

    parts = _decoder_and_head(model)
    with autocast or nullcontext():
        if parts is None:
            return model(**batch, use_cache=False).loss
        decoder, head = parts
        mask = batch.get("attention_mask")
        if mask is not None and bool(mask.all()):
            mask = None  # no padding: plain causal attention
        h = decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch.get("position_ids"),
                    use_cache=False).last_hidden_state
        target = batch["labels"][:, 1:]
        keep = target != IGNORE_INDEX
        if _frozen_plain_linear(head):  # logits a chunk at a time, never held whole (components/training/chunked_loss.py)
            return chunked_cross_entropy(h[:, :-1][keep], head.weight, target[keep])
        logits = head(h[:, :-1][keep])
        return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def _frozen_plain_linear(head) -> bool:
    import torch

    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def label_tokens(row: dict) -> int:
    """The tokens of a row whose next-token loss counts: prepare's answer_tokens (a row's first token, a
    template token, is never a label)."""
    return row["answer_tokens"]


def mean_label_tokens(rows: list[dict], schedule: list[list[int]]) -> float:
    """Label tokens per step, averaged over the schedule: train.loss_norm=tokens divides each step's summed loss by it."""
    return float(np.mean([sum(label_tokens(rows[i]) for i in step) for step in schedule])) if schedule else 1.0


def micro_batches(rows: list[dict], limit: int | None, packing: bool) -> list[list[dict]]:
    """A step's rows in consecutive groups whose computed tokens (rows x the longest; packing: their sum) fit
    `limit` (train.micro_batch_tokens; a row longer than it alone); None: one group."""
    if not limit:
        return [rows]
    return [[rows[i] for i in g] for g in fill_budget(range(len(rows)), [len(r["input_ids"]) for r in rows], limit, packing)]


def step_backward(run, rows: list[dict]) -> tuple[float, int, int]:
    """Forward and backward over one step's rows, a micro-batch at a time (train.micro_batch_tokens): each
    micro-batch's mean loss weighs by its share of the step's label tokens, so the gradients add up to the whole
    batch's. The step's loss is then scaled by train.loss_norm: 1 (batch: the step's mean), or the step's label
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


def add_neftune(model, alpha: float):
    """NEFTune: while the model trains, its input embeddings get uniform noise in [-m, m], m = alpha / sqrt(tokens x
    hidden) of the batch (Jain et al., 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"); evaluation
    (model.eval()) sees none. Returns the hook's handle."""
    import torch

    def noisy(module, inputs, output):
        if not module.training:
            return output
        m = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
        return output + torch.empty_like(output).uniform_(-m, m)

    return model.get_input_embeddings().register_forward_hook(noisy)


def speed_options(model, cfg) -> None:
    """train.gradient_checkpointing (recompute activations in backward: less memory, more time) and
    train.compile (torch.compile each decoder layer: one graph, reused by every layer)."""
    if cfg.gradient_checkpointing:
        target = model.get_base_model() if getattr(model, "peft_config", None) else model
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        target.config.use_cache = False
    if cfg.compile:
        parts = _decoder_and_head(model)
        layers = getattr(parts[0], "layers", None) if parts else None
        for layer in layers if layers is not None else [model]:
            layer.compile(dynamic=True)


def _sharded_loss(model, batch: dict, autocast, world: int, per_step: float | None = None):
    """This rank's share of a step's loss, scaled so DDP's gradient average is the whole batch's gradient.

    Each rank's loss is its summed token cross-entropy over the GLOBAL label-token count divided by
    `world` (transformers' `num_items_in_batch`, which PEFT passes through): the average over ranks is
    then the mean over every label token of the global batch, as one process computes it. With
    `per_step` (train.loss_norm=tokens: the schedule's mean label tokens per step) that constant
    divides instead of the step's own count.
    Returns (the loss to backward, the global mean loss, identical on every rank).
    """
    import torch

    count = dist.all_reduce_sum((batch["labels"][:, 1:] != IGNORE_INDEX).sum().to(torch.float32))
    denom = float(count) if per_step is None else per_step
    with autocast:
        loss = model(**batch, num_items_in_batch=denom / world).loss
    return loss, float(dist.all_reduce_sum(loss.detach().clone())) / world * denom / float(count)


def _curve_until(path: Path, step: int) -> list[str]:
    if step == 0 or not path.exists():
        return []
    return [line for line in path.read_text().splitlines(keepends=True)[1:] if int(line.split("\t", 1)[0]) <= step]


@dataclass
class TrainRun:
    """What `setup` builds and `loop` and `finish` use."""

    params: Params
    method: ModuleType
    model: object
    tokenizer: object
    rows: list[dict]
    out_dir: Path
    ckpt_root: Path
    curve_path: Path
    threads: int
    acc: object = None  # an accelerate Accelerator in a data-parallel group, else None
    world: int = 1
    rank: int = 0
    schedule: list[list[int]] = field(default_factory=list)
    opt: object = None
    sched: object = None
    precision: str = "fp32"
    autocast: object = None
    parts: dict = field(default_factory=dict)
    start: int = 0
    fwd: object = None  # what runs forward/backward (DDP-wrapped in a group); `model` stays the plain module
    trainable: int = 0
    total: int = 0
    device: object = None
    precision_choice: dict = field(default_factory=dict)  # how `precision` was chosen (metrics/train.json)
    scaler: object = None  # fp16: a GradScaler
    frozen_bf16: int = 0  # frozen parameters kept in bf16 (adapter methods in bf16)
    label_mean: float = 1.0  # label tokens per step, over the schedule (train.loss_norm=tokens)
    rows_per_step: float = 0.0  # mean over the schedule (batch_size, or what train.batch_tokens holds)
    lr: float = 0.0  # the peak learning rate used (train.lr_scaling under a token budget)
    steps: int = 0  # train.steps (or train.epochs'), or what train.budget_minutes planned
    max_length: int = 0  # the prepared rows' max_length (prepare.max_length, auto resolved)
    cap: int = 0  # the most steps: train.steps, or from train.epochs (planned_steps)
    budget: dict = field(default_factory=dict)  # train.budget_minutes: the plan (components/training/budget.py)

    @property
    def main(self) -> bool:
        return self.rank == 0  # only the main process writes files


@dataclass
class LoopResult:
    losses: list[float]
    health: Health
    best: dict
    real_tokens: int
    computed_tokens: int
    rank_tokens: list[int]
    wall: float


def frozen_to_bf16(model) -> int:
    """Store the frozen weights in bf16 once (autocast would cast them every step); trainable ones stay fp32,
    and so do the optimizer's moments. Returns how many tensors were converted."""
    import torch

    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)
            n += 1
    return n


def setup(params: Params, base_dir: Path, prepared_dir: Path, out_dir: Path, ckpt_dir: Path) -> TrainRun:
    """Seed, load the base model, apply the method, build optimizer and schedule, resume a matching checkpoint."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from components.model.base_model import load_base

    cfg = params.train
    device = resolve_device(cfg.device)
    acc = dist.accelerator(device)  # data-parallel (DDP: gloo on CPU, NCCL on CUDA) in a launched group, else None
    world, rank = (acc.num_processes, acc.process_index) if acc else (1, 0)
    if acc is not None and device.type == "cuda":
        device = acc.device  # this rank's GPU
    threads = set_threads(cfg.threads or dist.default_threads())
    set_seed(params.seed)  # before any model or adapter is built; the same seed on every rank
    method = get_method(cfg.method)
    model, tokenizer = load_base(base_dir, quantize_4bit=cfg.quantize_base == "4bit", method=cfg.method, device=device)
    run = TrainRun(params, method, model, tokenizer, load_prepared(prepared_dir)["train"].to_list(),
                   out_dir, ckpt_dir, out_dir.parent / f"{out_dir.name}_curve.tsv", threads, acc, world, rank)
    run.device = device
    if not trains(run.method):
        return run
    lengths = [r["length"] for r in run.rows]
    run.cap = planned_steps(cfg, lengths, params.seed)
    run.max_length = prepared_max_length(prepared_dir)  # packing's row width
    if cfg.quantize_base != "4bit":
        model.to(device)
    run.model = model = run.method.apply(model, cfg.method_config(),
                                         Context(steps=run.cap, base_dir=str(base_dir), seed=params.seed))
    model.to(device)  # adapters are created on the CPU
    run.trainable, run.total = count_parameters(model)
    model.train()
    speed_options(model, cfg)
    if cfg.neftune_alpha:
        add_neftune(model, cfg.neftune_alpha)
    if cfg.packing and _decoder_and_head(model) is None:
        raise ValueError(f"train.packing needs a method whose adapters sit inside the model's layers, not {cfg.method}")
    if cfg.packing and world > 1:  # the DDP path runs the model's own forward, which keeps a KV cache: no packed mask
        raise ValueError("train.packing runs in one process (train.processes=1)")
    if cfg.budget_minutes and cfg.method == "adalora":
        raise ValueError("train.budget_minutes: adalora's rank schedule needs train.steps up front; set train.steps")
    run.steps = min(run.cap, len(run.rows)) if cfg.budget_minutes else run.cap  # a budget plans after its first steps
    run.schedule = batch_schedule(lengths, cfg.batch_size, run.steps, params.seed,
                                  cfg.group_by_length, cfg.batch_tokens, cfg.packing)
    if world > 1 and min(map(len, run.schedule)) < world:
        what = f"train.batch_tokens {cfg.batch_tokens} holds a batch" if cfg.batch_tokens else f"train.batch_size {cfg.batch_size} is"
        raise ValueError(f"{what} smaller than the {world} processes sharing each batch")
    run.rows_per_step = float(np.mean([len(b) for b in run.schedule]))
    run.label_mean = mean_label_tokens(run.rows, run.schedule)
    run.lr = cfg.step_lr(run.rows_per_step)
    run.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=run.lr,
                                weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    run.sched = get_cosine_schedule_with_warmup(run.opt, min(cfg.warmup_steps, run.steps // 2), run.steps)
    costs = [budget_plan.step_cost(lengths, b, cfg.packing) for b in run.schedule]
    if world > 1 and cfg.micro_batch_tokens and max(costs) / world > cfg.micro_batch_tokens and run.main:
        print(f"train: train.micro_batch_tokens applies to one process; with {world} processes a rank computes up "
              f"to about {max(costs) // world} tokens a pass (lower train.batch_size if memory runs out)")
    typical = run.schedule[int(np.argsort(costs, kind="stable")[len(costs) // 2])]  # the median step, not the first
    typical_rows = [run.rows[i] for i in typical[rank::world]]
    if world == 1:  # timed at the shape a forward pass holds (train.micro_batch_tokens)
        typical_rows = micro_batches(typical_rows, cfg.micro_batch_tokens, cfg.packing)[0]
    probe = {k: v.to(device) for k, v in make_batch(typical_rows, tokenizer.pad_token_id, cfg.packing,
                                                    run.max_length)[0].items()}
    run.precision, run.precision_choice = decide_precision(cfg.precision, device, model, probe, lm_loss, cfg.method,
                                                           threads)
    if acc is not None:  # every rank trains in rank 0's precision (timings differ between processes)
        run.precision = ("fp32", "bf16", "fp16")[dist.all_gather(("fp32", "bf16", "fp16").index(run.precision))[0]]
    run.autocast = autocast_for(device, run.precision)
    if run.precision == "fp16":
        run.scaler = torch.amp.GradScaler(device.type)
    if run.precision == "bf16" and run.method.ROUTE == "merge":  # frozen weights in bf16 once, not cast every step
        run.frozen_bf16 = frozen_to_bf16(model)

    run.parts = made_from(params, prepared_dir, base_dir, run.precision)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if cfg.budget_minutes:
        plan = budget_plan.read_plan(ckpt_dir, fingerprint(run.parts))
        if plan is not None:  # an interrupted budgeted run: its plan, so that its checkpoints fit
            run.budget = {**plan, "kept_from_interrupted_run": True}
            set_steps(run, plan["steps"], 0)
    resume_from, why_not = latest_checkpoint(ckpt_dir, run.parts)
    if why_not and run.main:
        print(f"train: {why_not}; starting at step 0")
    if resume_from is not None:
        run.start = load_checkpoint(resume_from, model, run.opt, run.sched, run.method, rank)
        if run.main:
            print(f"resuming from {resume_from} (step {run.start})")
    run.fwd = model
    if acc:
        dist.check_agree(run.start, "the step to resume from")
        run.fwd = acc.prepare_model(model)  # DDP: gradients averaged over the ranks in backward()
    return run


def set_steps(run: TrainRun, total: int, done: int, schedule: list[list[int]] | None = None) -> None:
    """Train for `total` steps: the batch schedule (the same first steps; `schedule`, when it is already
    built that long, is used) and the cosine schedule for that many, advanced to `done` steps."""
    import warnings

    from transformers import get_cosine_schedule_with_warmup

    cfg = run.params.train
    run.steps = total
    if schedule is not None and len(schedule) >= total:  # batch_schedule's first steps do not depend on its length
        run.schedule = schedule[:total]
    else:
        run.schedule = batch_schedule([r["length"] for r in run.rows], cfg.batch_size, total, run.params.seed,
                                      cfg.group_by_length, cfg.batch_tokens, cfg.packing)
    run.label_mean = mean_label_tokens(run.rows, run.schedule)
    run.sched = get_cosine_schedule_with_warmup(run.opt, min(cfg.warmup_steps, total // 2), total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(done):
            run.sched.step()


def plan_budget(run: TrainRun, done: int, elapsed: float, times: list[float], costs: list[int]) -> None:
    """train.budget_minutes: the steps that fit what is left of it, at the measured seconds per computed token."""
    cfg = run.params.train
    lengths = [r["length"] for r in run.rows]
    rate = budget_plan.seconds_per_token(times, costs)
    budget_s = 60 * cfg.budget_minutes
    n = max(len(run.schedule), done + 1)
    while True:  # lengthen the candidate schedule until the budget, or train.steps, ends it
        sched = batch_schedule(lengths, cfg.batch_size, n, run.params.seed, cfg.group_by_length, cfg.batch_tokens,
                               cfg.packing)
        future = [budget_plan.step_cost(lengths, b, cfg.packing) for b in sched[done:]]
        total = budget_plan.fit_steps(done, elapsed, budget_s, rate, future, run.cap)
        if total < n or n >= run.cap:
            break
        n = min(run.cap, 2 * n)
    made_before = len(run.budget.get("plans", []))
    again = (budget_plan.replan_step(done, elapsed, budget_s, rate, future[: total - done],
                                     budget_plan.REPLAN_AT[made_before])
             if made_before < len(budget_plan.REPLAN_AT) else None)  # None: this was the last plan
    if run.acc:  # every rank trains rank 0's plan
        total, again = dist.all_gather((total, again))[0]
    set_steps(run, total, done, sched)
    made = {"after_steps": done, "elapsed_s": round(elapsed, 2), "s_per_1k_tokens": round(1000 * rate, 4), "steps": total}
    run.budget = {"budget_minutes": cfg.budget_minutes, "steps": total, "plans": [*run.budget.get("plans", []), made],
                  **({"replan_at_step": again} if again is not None else {})}
    if run.main:
        budget_plan.write_plan(run.ckpt_root, fingerprint(run.parts), run.budget)


def live_log(run: TrainRun, kept: list[str]):
    """dvclive beside the loss curve (`<train>_live/`: plots/metrics/train/{loss,lr}.tsv and metrics.json, read
    by `dvc plots`, DVC Studio and the VS Code extension); a resumed run replays the steps it keeps."""
    from dvclive import Live

    live = Live(dir=str(run.curve_path.parent / f"{run.out_dir.name}_live"), save_dvc_exp=False, dvcyaml=None)
    for line in kept:
        step, loss, lr = line.rstrip("\n").split("\t")
        live_step(live, int(step), float(loss), float(lr))
    return live


def live_step(live, step: int, loss: float, lr: float) -> None:
    """One step, with the loss curve's rounding (a resumed run's replayed steps read the same)."""
    live.step = step
    live.log_metric("train/loss", round(loss, 6))
    live.log_metric("train/lr", float(f"{lr:.6g}"))
    live.make_summary()


def loop(run: TrainRun, progress: bool = True) -> LoopResult:
    """Train from run.start to run.steps: loss curve, health checks, the best weights, checkpoints; under
    train.budget_minutes the steps are planned from the first ones' times (`plan_budget`)."""
    import torch
    from tqdm.auto import tqdm

    cfg, model, main = run.params.train, run.model, run.main
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    health = Health(cfg.spike_factor, cfg.spike_warmup, vocab_size=vocab if isinstance(vocab, int) else None)
    best = {"step": run.start, "loss": float("inf"), "state": trainable_state(model)}
    live = None
    if main:
        kept = _curve_until(run.curve_path, run.start)  # a resumed run drops the steps it is about to redo
        atomic_write_text(run.curve_path, "step\tloss\tlr\n" + "".join(kept))
        live = live_log(run, kept)
    losses: list[float] = []
    real_tokens = computed_tokens = 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    planning = bool(cfg.budget_minutes) and not run.budget  # a kept plan (resumed run) is not made again
    times: list[float] = []
    costs: list[int] = []
    lengths = [r["length"] for r in run.rows]
    bar = tqdm(total=run.steps, desc=f"train {cfg.method}", disable=not (progress and main), initial=run.start)
    step = run.start - 1
    with open(run.curve_path if main else os.devnull, "a", encoding="utf-8") as curve:
        while step + 1 < run.steps:
            step += 1
            t_step = time.perf_counter()
            rows = [run.rows[i] for i in run.schedule[step][run.rank::run.world]]
            if run.acc is None:  # value: the step's mean loss (the curve, the health checks)
                value, real, computed = step_backward(run, rows)
            else:
                batch, real = make_batch(rows, run.tokenizer.pad_token_id, cfg.packing, run.max_length)
                batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
                loss, value = _sharded_loss(run.fwd, batch, run.autocast, run.world,
                                            run.label_mean if cfg.loss_norm == "tokens" else None)
                (loss if run.scaler is None else run.scaler.scale(loss)).backward()
                computed = batch["input_ids"].numel()
            if not health.check(step + 1, value):  # before the update: these gradients are dropped
                bar.write(f"train: stopping: {health.problem['reason']} at step {step + 1} (loss {value:.4g})")
                break
            losses.append(value)
            if value < best["loss"]:  # the weights are not updated yet: this loss is theirs
                best = {"step": step, "loss": value, "state": trainable_state(model)}
            if run.scaler is None:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                run.opt.step()
            else:  # fp16: scaled loss, gradients unscaled before clipping, steps with inf/NaN gradients skipped
                run.scaler.unscale_(run.opt)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                run.scaler.step(run.opt)
                run.scaler.update()
            run.sched.step()
            after_step(run.method, model, step + 1)
            run.opt.zero_grad(set_to_none=True)
            real_tokens += real
            computed_tokens += computed
            curve.write(f"{step + 1}\t{value:.6f}\t{run.sched.get_last_lr()[0]:.6g}\n")
            curve.flush()
            if live is not None:
                live_step(live, step + 1, value, run.sched.get_last_lr()[0])
            bar.set_postfix(loss=f"{value:.4f}")
            bar.update(1)
            if planning:
                times.append(time.perf_counter() - t_step)
                costs.append(budget_plan.step_cost(lengths, run.schedule[step], cfg.packing))
                first = not run.budget and len(times) == budget_plan.PROBE_STEPS
                if first or run.budget.get("replan_at_step", float("inf")) <= step + 1 < run.steps:
                    plan_budget(run, step + 1, time.perf_counter() - t0, times, costs)
                    bar.total = run.steps
                    bar.refresh()
                    planning = "replan_at_step" in run.budget
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < run.steps:
                rank_rng = dist.all_gather(torch.get_rng_state()) if run.acc else None
                if main:
                    save_checkpoint(run.ckpt_root, step + 1, run.parts, model, run.opt, run.sched, run.method,
                                    rank_rng=rank_rng)
    wall = time.perf_counter() - t0
    bar.close()
    if live is not None:
        live.end()
    rank_tokens = [real_tokens]
    if run.acc:  # throughput counts every rank's tokens
        rank_tokens = dist.all_gather(real_tokens)
        real_tokens, computed_tokens = sum(rank_tokens), sum(dist.all_gather(computed_tokens))
    return LoopResult(losses, health, best, real_tokens, computed_tokens, rank_tokens, wall)


def finish(run: TrainRun, res: LoopResult) -> dict:
    """Restore the best weights if training went wrong; write the trained weights and metrics; drop checkpoints."""
    import torch

    cfg, health = run.params.train, res.health
    if health.problem:  # keep the best weights seen before the run went wrong
        named = dict(run.model.named_parameters())
        with torch.no_grad():
            for n, t in res.best["state"].items():
                named[n].copy_(t)
    tail = [x for x in res.losses[-cfg.log_every:] if math.isfinite(x)] or [float("nan")]
    done = run.start + len(res.losses)  # a health stop ends before the planned steps
    metrics = {
        "method": cfg.method, "family": run.method.FAMILY, "lr": run.lr, "steps": run.steps, "steps_done": done,
        "batch_tokens": cfg.batch_tokens, "rows_per_step": round(run.rows_per_step, 3), "loss_norm": cfg.loss_norm,
        "label_tokens_per_step": round(run.label_mean, 2), "train_rows": len(run.rows),
        "epochs": round(sum(len(b) for b in run.schedule[:done]) / max(len(run.rows), 1), 3),  # passes trained
        "resumed_at": run.start, "final_loss": round(float(np.mean(tail)), 5),
        "first_loss": round(res.losses[0], 5) if res.losses else None, "trainable_params": run.trainable,
        "total_params": run.total, "precision": run.precision, "precision_choice": run.precision_choice,
        "device": str(run.device), "frozen_bf16_tensors": run.frozen_bf16, "threads": run.threads, "wall_s": round(res.wall, 2),
        "tokens_per_s": round(res.real_tokens / res.wall, 2) if res.wall else None,
        "padding_fraction": round(1 - res.real_tokens / res.computed_tokens, 4) if res.computed_tokens else None,
        "health": {"ok": True} if not health.problem else {"ok": False, **health.problem, "best_step": res.best["step"]},
        "world_size": run.world, **({"tokens_per_rank": res.rank_tokens} if run.world > 1 else {}),
        "data_sha256": run.parts["data_sha256"],
        **({"budget": {**run.budget, "train_wall_s": round(res.wall, 2)}} if cfg.budget_minutes else {}),
    }
    if run.main:
        with atomic_dir(run.out_dir) as tmp:
            save_trained(cfg.method, run.model, run.tokenizer, tmp)
            atomic_write_json(tmp / "metrics.json", metrics)
        clear_checkpoints(run.ckpt_root, run.parts, run.steps)
    if run.acc:
        dist.barrier()  # the other ranks end once the main process has written the outputs
    return metrics


def write_untrained(run: TrainRun) -> dict:
    """A method that trains nothing (in-context learning): its files, an empty loss curve, no checkpoints."""
    cfg = run.params.train
    run.ckpt_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.curve_path, "step\tloss\tlr\n")
    with atomic_dir(run.out_dir) as tmp:
        info = run.method.write(tmp, run.rows, cfg.method_config(), run.params.seed)
        save_trained(cfg.method, run.model, run.tokenizer, tmp)
        metrics = {"method": cfg.method, "steps": 0, "trainable_params": 0,
                   "total_params": count_parameters(run.model)[1], **info}
        atomic_write_json(tmp / "metrics.json", metrics)
    return metrics


def run_train(params: Params, base_dir: str | Path, prepared_dir: str | Path, out_dir: str | Path,
              ckpt_dir: str | Path, progress: bool = True) -> dict:
    """Train with the configured method; write the adapter (or full model) and train metrics."""
    run = setup(params, *map(Path, (base_dir, prepared_dir, out_dir, ckpt_dir)))
    if not trains(run.method):
        return write_untrained(run) if run.main else {"method": params.train.method, "steps": 0, "rank": run.rank}
    return finish(run, loop(run, progress))
