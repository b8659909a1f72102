"""`train.precision: auto` decided by measurement, not by CPU flags alone.

bf16 on a CPU pays where the matmuls dominate and can lose where per-step overhead does (small steps).
So on a CPU with native bf16, `auto` times
a bf16 and an fp32 train step (forward and backward, no optimizer step) at the run's own shape (its median step), in
interleaved rounds, and takes bf16 only when it is at least SPEEDUP x faster. The decision is cached
per CPU model, torch version, threads, model and batch size (in tokens, rounded to a power of two),
so a run and its resume decide alike; a timing taken while the machine was busy (the 1-minute load average above
BUSY_LOAD x the cores: other work shared the cores) decides this run only and is not cached (entries from before the load was recorded are timed again). CPUs without native bf16 train in fp32 (emulated bf16 is slow);
CUDA takes bf16 (fp16 with a grad scaler where bf16 is missing) without timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from components.core import runtime

SPEEDUP = 1.15
BUSY_LOAD = 1.5  # x the cores: a load average above it means other work competed with the timing
ROUNDS = 2  # timed rounds (after one warm-up step per precision); each round runs fp32 and bf16 in A B B A order


def cache_file() -> Path:
    root = os.environ.get("PEFTPIPE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peftpipe"
    return Path(root) / "precision.json"


def cache_key(model, method: str, tokens: int, threads: int) -> str:
    import torch

    cfg = model.config
    shape = {"cpu": runtime.cpu_model(), "isa": runtime.machine()["isa"],  # one model name covers CPU generations
             "torch": torch.__version__, "threads": threads, "method": method,
             "model": [getattr(cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size",
                                                       "intermediate_size")],
             "tokens": 1 << max(0, int(tokens) - 1).bit_length()}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def load_average() -> float:
    return os.getloadavg()[0]


def time_steps(step, rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds of `step(precision)` for fp32 and bf16, interleaved A B B A after one warm-up each."""
    import statistics

    for arm in ("fp32", "bf16"):
        step(arm)
    seen: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(rounds):
        for arm in (("fp32", "bf16", "bf16", "fp32") if r % 2 == 0 else ("bf16", "fp32", "fp32", "bf16")):
            t0 = time.perf_counter()
            step(arm)
            seen[arm].append(time.perf_counter() - t0)
    return {arm: statistics.median(v) for arm, v in seen.items()}


def decide(precision: str, device, model, batch: dict, loss_fn, method: str, threads: int) -> tuple[str, dict]:
    """(precision to train in, how it was chosen): set, a device default, no native bf16, cached or measured.

    The timing runs forward and backward on `batch` and leaves the model, its gradients and the RNG as they were."""
    import torch

    if precision != "auto":
        return precision, {"how": "set"}
    if device.type != "cpu":
        return runtime.resolve_precision("auto", device.type), {"how": f"{device.type} default"}
    if not runtime.has_fast_bf16():
        return "fp32", {"how": "this CPU has no native bf16 (amx_bf16 or avx512_bf16)"}
    tokens = int(batch["input_ids"].numel())
    key, f = cache_key(model, method, tokens, torch.get_num_threads()), cache_file()
    cache = json.loads(f.read_text()) if f.exists() else {}
    if key in cache and "load_average_1m" in cache[key]:  # older entries recorded no load: they are timed again
        return cache[key]["precision"], {**cache[key], "how": f"measured before ({f})"}
    trainable = [p for p in model.parameters() if p.requires_grad]
    rng = torch.get_rng_state()
    load, cores = load_average(), os.cpu_count() or 1

    def step(arm: str) -> None:
        loss = loss_fn(model, batch, runtime.autocast_for(device, arm))
        loss.backward()
        for p in trainable:
            p.grad = None

    try:
        t = time_steps(step)
    finally:
        torch.set_rng_state(rng)
    speedup = t["fp32"] / t["bf16"] if t["bf16"] else 0.0
    choice = "bf16" if speedup >= SPEEDUP else "fp32"
    record = {"precision": choice, "fp32_step_s": round(t["fp32"], 4), "bf16_step_s": round(t["bf16"], 4),
              "bf16_speedup": round(speedup, 3), "batch_tokens": tokens, "threshold": SPEEDUP,
              "load_average_1m": round(load, 2)}
    if load > BUSY_LOAD * cores:  # the timings measured the contention: this run only, decided again next time
        return choice, {**record, "how": f"measured, not cached: 1-minute load average {load:.1f} above "
                                         f"{BUSY_LOAD:g} x {cores} cores"}
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        from components.core.atomic import atomic_write_json

        atomic_write_json(f, {**cache, key: record})
    except OSError:
        pass  # a read-only home: decide again next time
    return choice, {**record, "how": "measured"}
