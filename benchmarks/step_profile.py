"""Where a small LoRA train step spends its time: forward, backward, optimizer, and the top operators.

    python benchmarks/step_profile.py                 # dolly_open_qa, LoRA r=8 q/v, batch 8, 12 steps
    python benchmarks/step_profile.py --batch-size 16 --steps 8

Runs the train stage's own setup (components.training.train.setup: seed, base model, method,
optimizer, schedule, precision) and its loss (lm_loss), then times each phase of the first
--steps steps (the first two are warm-up and not counted), profiles one step with torch.profiler
and measures fp32 matmul throughput in the same process. Useful FLOPs per real token are
4 x params (forward plus the input-gradient backward through frozen weights), as in
train_speed.py. Writes docs/benchmarks/step_profile.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common import DATASETS, ROOT, env_block, markdown_table, write_json
from methods import bench_params, prepare_once
from train_speed import matmul_gflops

WARMUP = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "train_speed"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    p = bench_params(args.workdir, args.data, args.max_length, args.threads, [
        "train.method=lora", "train.lora.r=8", "train.lora.alpha=16", "train.lora.target_modules=[q_proj,v_proj]",
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.checkpoint_every={args.steps}",
        f"train.precision={args.precision}"])
    prepare_once(p)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from components.training import train as T
    from components.training.batches import make_batch
    from components.training.loss import lm_loss

    work = Path(args.workdir) / "step_profile"
    run = T.setup(p, Path(p.paths.base_model), Path(p.paths.prepared), work / "train", work / "ckpt")
    model, threads = run.model, torch.get_num_threads()
    n_params = run.total
    trainable = [q for q in model.parameters() if q.requires_grad]
    steps, counted = [], {"batch_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0, "real_tokens": 0}
    for step in range(args.steps):
        t0 = time.perf_counter()
        batch, real = make_batch([run.rows[i] for i in run.schedule[step]], run.tokenizer.pad_token_id, False,
                                 args.max_length)
        t1 = time.perf_counter()
        loss = lm_loss(model, batch, run.autocast)
        float(loss.detach())
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(trainable, p.train.max_grad_norm)
        run.opt.step()
        run.sched.step()
        run.opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        steps.append({"step": step + 1, "shape": list(batch["input_ids"].shape), "real_tokens": real,
                      "forward_s": round(t2 - t1, 4), "backward_s": round(t3 - t2, 4), "optimizer_s": round(t4 - t3, 4)})
        if step >= WARMUP:
            for k, v in (("batch_s", t1 - t0), ("forward_s", t2 - t1), ("backward_s", t3 - t2), ("optimizer_s", t4 - t3)):
                counted[k] += v
            counted["real_tokens"] += real
        print(f"step {step + 1}/{args.steps} {tuple(batch['input_ids'].shape)} forward {t2 - t1:.2f}s "
              f"backward {t3 - t2:.2f}s optimizer {t4 - t3:.3f}s", flush=True)
    total = sum(v for k, v in counted.items() if k.endswith("_s"))
    batch, _ = make_batch([run.rows[i] for i in run.schedule[WARMUP]], run.tokenizer.pad_token_id, False, args.max_length)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        lm_loss(model, batch, run.autocast).backward()
    model.zero_grad(set_to_none=True)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    prof_total = sum(e.self_cpu_time_total for e in ops)
    top = [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2), "share": round(e.self_cpu_time_total / prof_total, 4),
            "calls": e.count} for e in ops[:15]]
    roof = matmul_gflops(threads)
    tok_s = counted["real_tokens"] / total
    useful = 4 * n_params * tok_s / 1e9
    mm = sum(t["share"] for t in top if t["op"] in ("aten::mm", "aten::addmm", "aten::bmm"))
    report = {
        "benchmark": "step_profile", "command": " ".join(["python benchmarks/step_profile.py", *(argv or sys.argv[1:])]),
        "env": env_block(threads), "config": vars(args) | {"params": n_params, "precision_used": run.precision},
        "fp32_matmul_gflops": roof, "steps": steps, "counted_steps": args.steps - WARMUP,
        "totals": {k: round(v, 3) if isinstance(v, float) else v for k, v in counted.items()},
        "real_tokens_per_s": round(tok_s, 2), "useful_gflops": round(useful, 1), "profile_top_ops": top,
        "ratios": {"forward_share": round(counted["forward_s"] / total, 4),
                   "backward_share": round(counted["backward_s"] / total, 4),
                   "optimizer_share": round(counted["optimizer_s"] / total, 4),
                   "batch_building_share": round(counted["batch_s"] / total, 4),
                   "matmul_share_of_profiled_step": round(mm, 4),
                   "useful_flops_over_fp32_matmul_peak": round(useful / roof["square_2048"], 4),
                   "useful_flops_over_mlp_shape_matmul": round(useful / roof["mlp_800x576x1536"], 4)},
        "load_average": list(os.getloadavg()),
    }
    out = Path(args.out)
    write_json(out / "step_profile.json", report)
    from components.core.atomic import atomic_write_text

    r = report["ratios"]
    phases = markdown_table(["phase", "s (counted steps)", "share"], [
        [k.removesuffix("_s"), f"{counted[k]:.2f}", f"{counted[k] / total:.1%}"]
        for k in ("forward_s", "backward_s", "optimizer_s", "batch_s")])
    op_table = markdown_table(["operator", "self ms", "share", "calls"],
                              [[t["op"][:60], f"{t['self_ms']:.1f}", f"{t['share']:.1%}", t["calls"]] for t in top])
    atomic_write_text(out / "step_profile.md", (
        f"# One LoRA train step, phase by phase and operator by operator\n\nCommand: `{report['command']}`\n\n"
        f"LoRA r=8 on q_proj/v_proj, batch {args.batch_size} dolly_open_qa rows (length-grouped, max length "
        f"{args.max_length}), precision {run.precision}, {threads} threads on {report['env']['cpu']} "
        f"(flags: {', '.join(report['env']['isa']) or 'none of the listed'}); {args.steps - WARMUP} steps counted after "
        f"{WARMUP} warm-up steps.\n\n"
        f"Real tokens/s {tok_s:.1f}; useful FLOPs {useful:.1f} GFLOP/s = {r['useful_flops_over_fp32_matmul_peak']:.0%} of "
        f"the fp32 matmul measured in the same process on a 2048 square ({roof['square_2048']:.0f} GFLOP/s) and "
        f"{r['useful_flops_over_mlp_shape_matmul']:.0%} of it at the model's MLP shape "
        f"({roof['mlp_800x576x1536']:.0f} GFLOP/s).\n\n{phases}\n\nOne profiled step (forward and backward), "
        f"operators by self time:\n\n{op_table}\n"))
    print(phases)
    print(op_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
