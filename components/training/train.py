"""Train stage: a plain, seeded training loop with length-grouped batches and checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from components.training import distributed as dist
from components.methods import Context, after_step, get_method, load_extra_state, save_extra_state, trains
from components.model.trained import count_parameters, save_trained
from components.data.prepare import IGNORE_INDEX, load_prepared
from components.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from components.core.config import Params
from components.core.runtime import resolve_precision, set_seed, set_threads


class Health:
    """Training health: NaN/inf loss or a spike stops training; the best weights so far are kept.

    A spike is a loss above the first loss and above `factor` x the lower of the first loss and the
    mean of the previous 20 losses, checked once `warmup` steps have run (so a run that blew up during
    warmup is still caught when the detector arms).
    """

    def __init__(self, factor: float, warmup: int, window: int = 20):
        self.factor, self.warmup, self.window = factor, warmup, window
        self.history: list[float] = []
        self.problem: dict | None = None

    def check(self, step: int, value: float) -> bool:
        """Record a loss; False (and self.problem set) when training must stop."""
        if not math.isfinite(value):
            self.problem = {"reason": "non-finite loss", "step": step, "value": value}
        elif len(self.history) >= self.warmup:
            recent = self.history[-self.window:]
            first = self.history[0]
            ref = min(sum(recent) / len(recent), first)
            if value > self.factor * ref and value > first:
                self.problem = {"reason": f"loss spike above {self.factor:g}x the reference loss {ref:.4g}",
                                "step": step, "value": value}
        if self.problem:
            return False
        self.history.append(value)
        return True


def batch_schedule(lengths: list[int], batch_size: int, steps: int, seed: int, group: bool = True) -> list[list[int]]:
    """Index lists for every step: shuffle, group similar lengths (less padding), shuffle batches.

    group=False: plain random batches (consecutive slices of each epoch's permutation)."""
    rng = np.random.default_rng(seed)
    n = len(lengths)
    bs = min(batch_size, n)
    out: list[list[int]] = []
    while len(out) < steps:
        perm = rng.permutation(n)
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
    only where there is a label (prompt, padding and the last position need no logits) and no KV cache built."""
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
        logits = head(h[:, :-1][keep])
        return torch.nn.functional.cross_entropy(logits.float(), target[keep])


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


def fingerprint(params: Params, prepared_dir: Path, base_dir: Path) -> str:
    """What a checkpoint must match to be resumed (not the process count: N processes train as one does)."""
    h = hashlib.sha256()
    h.update(json.dumps({"seed": params.seed, "train": params.train.model_dump(mode="json", exclude={"processes"})}, sort_keys=True).encode())
    for f in (prepared_dir / "stats.json", base_dir / "config.json"):
        h.update(f.read_bytes() if f.exists() else b"")
    return h.hexdigest()[:16]


def trainable_state(model) -> dict:
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt_root: Path, step: int, fp: str, model, optimizer, scheduler, method, keep: int = 2,
                    rank_rng: list | None = None) -> None:
    """Write a checkpoint; `rank_rng` (every rank's torch RNG state, data-parallel runs) is kept beside rank 0's."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(ckpt_root / f"step-{step:06d}") as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        save_extra_state(method, model, tmp / "method_state.safetensors")
        save_file({"torch": torch.get_rng_state(), **{f"rank{r}": t for r, t in enumerate(rank_rng or [])}},
                  tmp / "rng.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        atomic_write_json(tmp / "state.json", {"step": step, "fingerprint": fp, "scheduler": scheduler.state_dict()})
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path, fp: str) -> Path | None:
    """Newest complete checkpoint with a matching fingerprint; partial ones are skipped."""
    for d in sorted(ckpt_root.glob("step-*"), reverse=True):
        try:
            state = json.loads((d / "state.json").read_text())
            if state["fingerprint"] == fp and all((d / f).exists() for f in ("trainable.safetensors", "optimizer.pt", "rng.safetensors")):
                return d
        except (OSError, ValueError, KeyError):
            continue
    return None


def load_checkpoint(d: Path, model, optimizer, scheduler, method, rank: int = 0) -> int:
    import torch
    from safetensors.torch import load_file

    state = json.loads((d / "state.json").read_text())
    weights = load_file(d / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(d / "rng.safetensors")
    torch.set_rng_state(rng.get(f"rank{rank}", rng["torch"]))
    load_extra_state(method, model, d / "method_state.safetensors")
    return int(state["step"])


def _sharded_loss(model, batch: dict, autocast, world: int):
    """This rank's share of a step's loss, scaled so DDP's gradient average is the whole batch's gradient.

    Each rank's loss is its summed token cross-entropy over the GLOBAL label-token count divided by
    `world` (transformers' `num_items_in_batch`, which PEFT passes through): the average over ranks is
    then the mean over every label token of the global batch, as one process computes it.
    Returns (the loss to backward, the global mean loss, identical on every rank).
    """
    import torch

    count = dist.all_reduce_sum((batch["labels"] != IGNORE_INDEX).sum().to(torch.float32))
    with autocast:
        loss = model(**batch, num_items_in_batch=count / world).loss
    return loss, float(dist.all_reduce_sum(loss.detach().clone())) / world


def _curve_until(path: Path, step: int) -> list[str]:
    if step == 0 or not path.exists():
        return []
    return [line for line in path.read_text().splitlines(keepends=True)[1:] if int(line.split("\t", 1)[0]) <= step]


def run_train(params: Params, base_dir: str | Path, prepared_dir: str | Path, out_dir: str | Path,
              ckpt_dir: str | Path, progress: bool = True) -> dict:
    """Train with the configured method; write the adapter (or full model) and train metrics."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from components.model.base_model import load_base

    cfg = params.train
    base_dir, prepared_dir, out_dir, ckpt_dir = map(Path, (base_dir, prepared_dir, out_dir, ckpt_dir))
    acc = dist.accelerator()  # data-parallel (DDP over gloo) inside a launched group of >1 processes, else None
    world, rank = (acc.num_processes, acc.process_index) if acc else (1, 0)
    main = rank == 0  # only the main process writes files
    threads = set_threads(cfg.threads or dist.default_threads())
    set_seed(params.seed)  # the same seed on every rank: every rank builds the same model
    model, tokenizer = load_base(base_dir)
    method = get_method(cfg.method)
    train = load_prepared(prepared_dir)["train"]
    rows = train.to_list()
    curve_path = out_dir.parent / f"{out_dir.name}_curve.tsv"
    if not trains(method) and not main:
        return {"method": cfg.method, "steps": 0, "rank": rank}
    if not trains(method):  # in-context learning: nothing to train (an empty loss curve, no checkpoints)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(curve_path, "step\tloss\tlr\n")
        with atomic_dir(out_dir) as tmp:
            info = method.write(tmp, rows, cfg.method_config(), params.seed)
            save_trained(cfg.method, model, tokenizer, tmp)
            metrics = {"method": cfg.method, "steps": 0, "trainable_params": 0,
                       "total_params": count_parameters(model)[1], **info}
            atomic_write_json(tmp / "metrics.json", metrics)
        return metrics
    model = method.apply(model, cfg.method_config(), Context(steps=cfg.steps, base_dir=str(base_dir), seed=params.seed))
    trainable, total = count_parameters(model)
    model.train()
    speed_options(model, cfg)
    if cfg.packing and _decoder_and_head(model) is None:
        raise ValueError(f"train.packing needs a method whose adapters sit inside the model's layers, not {cfg.method}")
    if cfg.packing and world > 1:  # the DDP path runs the model's own forward, which keeps a KV cache: no packed mask
        raise ValueError("train.packing runs in one process (train.processes=1)")

    schedule = batch_schedule([r["length"] for r in rows], cfg.batch_size, cfg.steps, params.seed, cfg.group_by_length)
    if world > 1 and min(map(len, schedule)) < world:
        raise ValueError(f"train.batch_size {cfg.batch_size} is smaller than the {world} processes sharing each batch")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.method_lr(), weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup_steps, cfg.steps // 2), cfg.steps)
    precision = resolve_precision(cfg.precision)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    fp = fingerprint(params, prepared_dir, base_dir)
    ckpt_root = ckpt_dir
    ckpt_root.mkdir(parents=True, exist_ok=True)
    start = 0
    resume_from = latest_checkpoint(ckpt_root, fp)
    if resume_from is not None:
        start = load_checkpoint(resume_from, model, opt, sched, method, rank)
        if main:
            print(f"resuming from {resume_from} (step {start})")
    fwd = model  # what runs forward/backward; `model` stays the unwrapped module for every other use
    if acc:
        dist.check_agree(start, "the step to resume from")
        fwd = acc.prepare_model(model)  # DDP: gradients averaged over the ranks in backward()

    health = Health(cfg.spike_factor, cfg.spike_warmup)
    best = {"step": start, "loss": float("inf"), "state": trainable_state(model)}
    if main:
        kept = _curve_until(curve_path, start)  # a resumed run drops the steps it is about to redo
        atomic_write_text(curve_path, "step\tloss\tlr\n" + "".join(kept))
    curve = open(curve_path if main else os.devnull, "a", encoding="utf-8")
    losses: list[float] = []
    real_tokens = computed_tokens = 0
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc=f"train {cfg.method}", disable=not (progress and main), initial=start, total=cfg.steps)
    with curve:
        for step in bar:
            batch, real = make_batch([rows[i] for i in schedule[step][rank::world]], tokenizer.pad_token_id, cfg.packing,
                                     params.prepare.max_length)
            if acc is None:
                loss = lm_loss(model, batch, autocast)
                value = float(loss.detach())
            else:
                loss, value = _sharded_loss(fwd, batch, autocast, world)
            if not health.check(step + 1, value):
                bar.write(f"train: stopping: {health.problem['reason']} at step {step + 1} (loss {value:.4g})")
                break
            losses.append(value)
            if value < best["loss"]:  # the weights are not updated yet: this loss is theirs
                best = {"step": step, "loss": value, "state": trainable_state(model)}
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            opt.step()
            sched.step()
            after_step(method, model, step + 1)
            opt.zero_grad(set_to_none=True)
            real_tokens += real
            computed_tokens += batch["input_ids"].numel()
            curve.write(f"{step + 1}\t{value:.6f}\t{sched.get_last_lr()[0]:.6g}\n")
            curve.flush()
            bar.set_postfix(loss=f"{value:.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                rank_rng = dist.all_gather(torch.get_rng_state()) if acc else None
                if main:
                    save_checkpoint(ckpt_root, step + 1, fp, model, opt, sched, method, rank_rng=rank_rng)
    wall = time.perf_counter() - t0
    rank_tokens = [real_tokens]
    if acc:  # throughput counts every rank's tokens
        rank_tokens = dist.all_gather(real_tokens)
        real_tokens, computed_tokens = sum(rank_tokens), sum(dist.all_gather(computed_tokens))
    if health.problem:  # keep the best weights seen before the run went wrong
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in best["state"].items():
                named[n].copy_(t)

    tail = [x for x in losses[-cfg.log_every:] if math.isfinite(x)] or [float("nan")]
    metrics = {
        "method": cfg.method, "family": method.FAMILY, "lr": cfg.method_lr(), "steps": cfg.steps, "resumed_at": start, "final_loss": round(float(np.mean(tail)), 5),
        "first_loss": round(losses[0], 5) if losses else None, "trainable_params": trainable, "total_params": total,
        "precision": precision, "threads": threads, "wall_s": round(wall, 2),
        "tokens_per_s": round(real_tokens / wall, 2) if wall else None,
        "padding_fraction": round(1 - real_tokens / computed_tokens, 4) if computed_tokens else None,
        "health": {"ok": True} if not health.problem else {"ok": False, **health.problem, "best_step": best["step"]},
        "world_size": world, **({"tokens_per_rank": rank_tokens} if world > 1 else {}),
    }
    if main:
        with atomic_dir(out_dir) as tmp:
            save_trained(cfg.method, model, tokenizer, tmp)
            atomic_write_json(tmp / "metrics.json", metrics)
    if acc:
        dist.barrier()  # the other ranks end once the main process has written the outputs
    return metrics
