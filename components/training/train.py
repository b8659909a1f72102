"""Train stage: a plain, seeded training loop with length-grouped batches and checkpoints.

Its parts live beside it in components/training/: the batch schedule (schedule.py), batches (batches.py), the loss
at the answer positions (loss.py), training health (health.py), the options around the loop (options.py), the
time budget's plan (budget.py), the precision (precision.py), checkpoints.py and distributed.py."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from components.training import distributed as dist
from components.methods import Context, after_step, get_method, trains
from components.training.checkpoints import (clear_checkpoints, fingerprint, latest_checkpoint, load_checkpoint, made_from,
                                             save_checkpoint, trainable_state)
from components.model.trained import count_parameters, save_trained
from components.data.prepare import load_prepared, prepared_max_length
from components.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from components.core.errors import ConfigError
from components.config.params import Params
from components.core.runtime import autocast_for, resolve_device, set_seed, set_threads
from components.training import budget as budget_plan
from components.training.batches import make_batch, mean_label_tokens, micro_batches
from components.training.health import Health
from components.training.loss import decoder_and_head, lm_loss, sharded_loss, step_backward
from components.training.options import add_neftune, frozen_to_bf16, live_log, live_step, speed_options
from components.training.precision import decide as decide_precision
from components.training.schedule import batch_schedule, planned_steps


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
    # params that cannot work together are refused as they are read (components/config/params.py); these checks
    # need the model or the process group too
    if cfg.packing and decoder_and_head(model) is None:
        raise ConfigError(f"train.packing needs a method whose adapters sit inside the model's layers, not {cfg.method}")
    if cfg.packing and world > 1:  # the DDP path runs the model's own forward, which keeps a KV cache: no packed mask
        raise ConfigError("train.packing runs in one process (train.processes=1)")
    run.steps = min(run.cap, len(run.rows)) if cfg.budget_minutes else run.cap  # a budget plans after its first steps
    run.schedule = batch_schedule(lengths, cfg.batch_size, run.steps, params.seed,
                                  cfg.group_by_length, cfg.batch_tokens, cfg.packing)
    if world > 1 and min(map(len, run.schedule)) < world:
        what = f"train.batch_tokens {cfg.batch_tokens} holds a batch" if cfg.batch_tokens else f"train.batch_size {cfg.batch_size} is"
        raise ConfigError(f"{what} smaller than the {world} processes sharing each batch")
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
            budget_plan.set_steps(run, plan["steps"], 0)
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


def loop(run: TrainRun, progress: bool = True) -> LoopResult:
    """Train from run.start to run.steps: loss curve, health checks, the best weights, checkpoints; under
    train.budget_minutes the steps are planned from the first ones' times (`budget.plan_budget`)."""
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
                loss, value = sharded_loss(run.fwd, batch, run.autocast, run.world,
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
                    budget_plan.plan_budget(run, step + 1, time.perf_counter() - t0, times, costs)
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
