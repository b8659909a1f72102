"""peftpipe's train stage against the plain recipe from the PEFT docs, same model, data and budget.

    python benchmarks/train_speed.py                  # LoRA r=8 on q/v, batch 8, 40 steps, dolly_open_qa
    python benchmarks/train_speed.py --steps 150

The plain recipe: transformers `Trainer` + `get_peft_model` + `DataCollatorForSeq2Seq` (pad to the
longest row of a random batch), linear schedule. peftpipe: its `train` stage (length-grouped batches,
cosine schedule). Both start from the same tokenized rows (dolly_open_qa, prepared by the pipeline),
seed, batch size, steps, learning rate and warmup, each in its own process (peak memory is its own),
and both are scored with the same eval-loss function on the same test questions. Also measures fp32
matmul throughput in the same run for a utilisation figure (a LoRA step costs about 4 x params
FLOPs per computed token: forward plus the backward pass through frozen weights).
Writes docs/benchmarks/train_speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import DATASETS, ROOT, env_block, markdown_table, peak_rss_mb, read_json, write_json
from methods import bench_params, prepare_once

ENGINES = ["plain", "peftpipe"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "train_speed"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def params(args):
    return bench_params(args.workdir, args.data, args.max_length, args.threads, [
        "train.method=lora", "train.lora.r=8", "train.lora.alpha=16", "train.lora.target_modules=[q_proj,v_proj]",
        f"train.lora.lr={args.lr}", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
        f"train.checkpoint_every={args.steps}", "train.precision=fp32"])


def score(model, tokenizer, p, n: int) -> float:
    from components.evaluate import eval_loss, test_samples

    samples = test_samples(p.paths.prepared, n)
    return eval_loss(model, tokenizer, samples, [s["prompt_ids"] for s in samples], 16)


def run_plain(p, args) -> dict:
    """The recipe a user writes from the PEFT docs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from components.base_model import load_base
    from components.prepare import load_prepared

    torch.set_num_threads(args.threads or torch.get_num_threads())
    torch.manual_seed(p.seed)
    model, tok = load_base(p.paths.base_model)
    c = p.train.lora
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                             target_modules=list(c.target_modules)))
    train = load_prepared(p.paths.prepared)["train"].select_columns(["input_ids", "labels"])
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    seen = {"real": 0, "computed": 0}

    def collate(rows):
        batch = pad(rows)
        seen["real"] += int(batch["attention_mask"].sum())
        seen["computed"] += batch["attention_mask"].numel()
        return batch

    targs = TrainingArguments(output_dir=str(Path(args.workdir) / "plain_out"), per_device_train_batch_size=args.batch_size,
                              max_steps=args.steps, learning_rate=args.lr, warmup_steps=p.train.warmup_steps,
                              weight_decay=p.train.weight_decay, max_grad_norm=p.train.max_grad_norm, logging_steps=10,
                              save_strategy="no", report_to=[], seed=p.seed, use_cpu=True, dataloader_num_workers=0,
                              remove_unused_columns=False, disable_tqdm=False)
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collate)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "real_tokens": seen["real"], "computed_tokens": seen["computed"],
            "final_loss": out.training_loss, "eval_loss": score(model, tok, p, args.eval_samples)}


def run_ours(p, args) -> dict:
    from components.methods import load_trained
    from components.train import run_train

    work = Path(args.workdir)
    m = run_train(p, p.paths.base_model, p.paths.prepared, work / "ours" / "train", work / "ours" / "ckpt")
    model, tok, _ = load_trained(p.paths.base_model, work / "ours" / "train")
    real = m["tokens_per_s"] * m["wall_s"]
    return {"wall_s": m["wall_s"], "real_tokens": round(real), "computed_tokens": round(real / (1 - m["padding_fraction"])),
            "final_loss": m["final_loss"], "eval_loss": score(model, tok, p, args.eval_samples)}


def matmul_gflops(threads: int, n: int = 2048) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main(argv=None) -> int:
    import os
    import shutil

    args = parse_args(argv)
    work = Path(args.workdir)
    p = params(args)
    if args.one:
        shutil.rmtree(work / args.one, ignore_errors=True)
        shutil.rmtree(work / "ours", ignore_errors=True) if args.one == "peftpipe" else None
        r = (run_plain if args.one == "plain" else run_ours)(p, args)
        r["peak_rss_mb"] = peak_rss_mb()
        write_json(work / args.one / "result.json", r)
        return 0
    prepare_once(p)
    child = argv if argv is not None else sys.argv[1:]
    results = {}
    for e in ENGINES:
        print(f"[{e}] training {args.steps} steps x batch {args.batch_size} ...", flush=True)
        subprocess.run([sys.executable, __file__, *child, "--one", e], check=True, cwd=ROOT)
        r = read_json(work / e / "result.json")
        r["real_tokens_per_s"] = r["real_tokens"] / r["wall_s"]
        r["padding_fraction"] = 1 - r["real_tokens"] / r["computed_tokens"]
        r["s_per_step"] = r["wall_s"] / args.steps
        results[e] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
    threads = args.threads or os.cpu_count()
    gflops = matmul_gflops(threads)
    from components.base_model import load_base

    n_params = sum(x.numel() for x in load_base(p.paths.base_model)[0].parameters())
    for r in results.values():
        r["utilisation_of_fp32_matmul"] = round(4 * n_params * r["computed_tokens"] / r["wall_s"] / (gflops * 1e9), 4)
    a, b = results["plain"], results["peftpipe"]
    ratios = {"real_tokens_per_s": round(b["real_tokens_per_s"] / a["real_tokens_per_s"], 3),
              "peak_rss": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
              "eval_loss_diff": round(b["eval_loss"] - a["eval_loss"], 4),
              "wall": round(b["wall_s"] / a["wall_s"], 3)}
    command = " ".join(["python benchmarks/train_speed.py", *child])
    report = {"benchmark": "train_speed", "command": command, "env": env_block(threads),
              "config": {k: v for k, v in vars(args).items() if k != "one"} | {"params": n_params},
              "fp32_matmul_gflops": round(gflops, 1), "results": results, "ratios": ratios}
    out = Path(args.out)
    write_json(out / "train_speed.json", report)
    rows = [[e, f"{r['real_tokens_per_s']:.1f}", f"{r['padding_fraction']:.1%}", f"{r['s_per_step']:.2f}",
             f"{r['peak_rss_mb']:,.0f}", f"{r['wall_s']:.0f}", f"{r['final_loss']:.3f}", f"{r['eval_loss']:.4f}",
             f"{r['utilisation_of_fp32_matmul']:.1%}"] for e, r in results.items()]
    table = markdown_table(["recipe", "real tokens/s", "padding", "s/step", "peak RSS MB", "train s", "train loss*",
                            "eval loss", "of fp32 matmul peak"], rows)
    (out / "train_speed.md").write_text(
        f"# Training speed against the plain recipe\n\nCommand: `{command}`\n\nLoRA r=8 on q_proj/v_proj, "
        f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}, max length {args.max_length}, fp32, {threads} threads, "
        f"dolly_open_qa; eval loss on the first {args.eval_samples} test questions. fp32 matmul measured in the same run: "
        f"{gflops:.0f} GFLOP/s (utilisation assumes 4 x {n_params / 1e6:.0f}M FLOPs per computed token).\n\n{table}\n\n"
        f"peftpipe / plain: real tokens/s {ratios['real_tokens_per_s']:.2f}x, peak memory {ratios['peak_rss']:.2f}x, "
        f"eval loss {ratios['eval_loss_diff']:+.4f}.\n\n*train loss: the plain recipe reports the Trainer's mean over the run, "
        f"peftpipe its last logged step; compare eval loss.\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        ax[0].bar(list(results), [r["real_tokens_per_s"] for r in results.values()])
        ax[0].set_ylabel("real tokens/s")
        ax[1].bar(list(results), [r["peak_rss_mb"] / 1024 for r in results.values()], color="tab:orange")
        ax[1].set_ylabel("peak RSS GB")
        fig.tight_layout()
        fig.savefig(out / "train_speed.png", dpi=120)
    except ImportError:
        pass
    print(table)
    print(f"peftpipe / plain: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
