"""peftpipe's train stage against the plain recipe from the PEFT docs, and each speed lever on its own, in one run.

    python benchmarks/train_speed.py                  # LoRA r=8 on q/v, batch 8, 40 steps, dolly_open_qa, every arm
    python benchmarks/train_speed.py --arms plain packed --steps 10

The plain recipe: transformers `Trainer` + `get_peft_model` + `DataCollatorForSeq2Seq` (pad to the
longest row of a random batch). peftpipe: its `train` stage, once with params.yaml's defaults and
once per lever (one option changed at a time, see ARMS). Every arm starts from the same tokenized
rows (dolly_open_qa, prepared by the pipeline), seed, batch size (in examples), steps, learning rate,
schedule (cosine, the same warmup), LoRA dropout and weight decay, runs in its own process (peak
memory is its own: read when training ends, before scoring) and is scored with the same eval-loss
function on the same test questions. Arms run in the order given by --order (the headline pair
first and last) and --repeat runs the plain recipe and the fastest configuration again, in reverse,
to spread the noise of a shared machine. Also measures fp32 matmul throughput in the same run for a
roofline figure: a LoRA step costs about 4 x params FLOPs per token (forward, plus the backward
pass through frozen weights, which needs input gradients only). Writes
docs/benchmarks/train_speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import DATASETS, MAX_LOAD, ROOT, env_block, markdown_table, peak_rss_mb, quiet_enough, read_json, write_json
from methods import bench_params, prepare_once

# arm: (what it changes, params overrides on top of the defaults, fraction of --steps, scored)
ARMS = {
    "plain": ("PEFT-docs recipe: Trainer, random batches padded to the longest row", [], 1, True),
    "peftpipe": ("train stage, params.yaml defaults (length-grouped batches, logits only at labels)", [], 1, True),
    "random_padded": ("lever: no length grouping (random batches padded, as the plain recipe)",
                      ["train.group_by_length=false"], 1, True),
    "packed": ("lever: packing (the random batches of the row above, packed, block-diagonal attention)",
               ["train.group_by_length=false", "train.packing=true"], 1, True),
    "grouped_packed": ("lever: packing on top of length grouping", ["train.packing=true"], 1, True),
    "batch_norm": ("loss normalisation off: each step's mean loss (train.loss_norm=batch), so a short-answer "
                   "step's tokens weigh more", ["train.loss_norm=batch"], 1, True),
    "all_logits": ("lever off: logits and loss over every position (the model's own loss)", [], 1, True),
    "compile": ("lever: torch.compile of each decoder layer (compile time included)", ["train.compile=true"], 1, True),
    "grad_ckpt": ("memory lever: gradient checkpointing", ["train.gradient_checkpointing=true"], 1, True),
    "threads_1": ("threads: 1 intra-op thread instead of 2 (a quarter of the steps)", ["train.threads=1"], 0.25, False),
    "bf16": ("precision: bf16 autocast (frozen weights stored in bf16 once)", ["train.precision=bf16"], 1, True),
    "auto": ("precision: auto (bf16 only where a timed step at this shape is >= 1.15x faster)",
             ["train.precision=auto"], 1, True),
    "tokens": ("lever: a token budget per step (train.batch_tokens; the same rows in fewer, larger steps, warmup "
               "scaled with them, lr by the square-root rule)", [], "rows", True),
    "tokens_auto": ("the token budget with precision: auto", ["train.precision=auto"], "rows", True),
}
PROBE_DRIFT = 0.15  # a round whose matmul probe moved more than this from the first probe is marked and run again
ORDER = ["plain", "peftpipe", "packed", "all_logits", "random_padded", "grad_ckpt", "compile", "threads_1", "grouped_packed"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-tokens", type=int, default=2048, help="the tokens arms' train.batch_tokens")
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=ORDER, choices=list(ARMS))
    p.add_argument("--repeat", action="store_true", help="run plain and the fastest arm again at the end, in reverse")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds: the arms in order, then reversed (A B B A), "
                                                        "each a fresh process; medians and the ratio's spread over rounds")
    p.add_argument("--wait", type=float, default=0, metavar="MINUTES",
                   help=f"when the 1-minute load average is above {MAX_LOAD}, wait up to this long for it to fall "
                        "(0: refuse at once)")
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "train_speed"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def params(args, arm: str = "peftpipe"):
    _, extra, frac, _ = ARMS[arm]
    base = bench_params(args.workdir, args.data, args.max_length, args.threads, [
        "train.method=lora", "train.lora.r=8", "train.lora.alpha=16", "train.lora.target_modules=[q_proj,v_proj]",
        f"train.lora.lr={args.lr}", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
        f"train.checkpoint_every={args.steps}", "train.precision=fp32", *extra])
    if frac == "rows":  # a token budget: as many steps as it takes to see the rows the other arms see
        steps, warmup = budget_steps(args, base)
        extra = [*extra, f"train.batch_tokens={args.batch_tokens}", f"train.warmup_steps={warmup}"]
    else:
        steps = max(2, round(args.steps * frac))
    return bench_params(args.workdir, args.data, args.max_length, args.threads, [
        "train.method=lora", "train.lora.r=8", "train.lora.alpha=16", "train.lora.target_modules=[q_proj,v_proj]",
        f"train.lora.lr={args.lr}", f"train.steps={steps}", f"train.batch_size={args.batch_size}",
        f"train.checkpoint_every={steps}", "train.precision=fp32", *extra])


def budget_steps(args, p) -> tuple[int, int]:
    """(steps, warmup steps) under train.batch_tokens that cover the rows of --steps x --batch-size rows, with the
    warmup the same fraction of the run; from the train stage's own schedule on the prepared rows."""
    from components.data.prepare import load_prepared
    from components.training.schedule import batch_schedule

    lengths = load_prepared(p.paths.prepared)["train"]["length"]
    rows = args.steps * args.batch_size
    sched = batch_schedule(lengths, args.batch_size, rows, p.seed, p.train.group_by_length, args.batch_tokens,
                           p.train.packing)
    seen, steps = 0, 0
    while seen < rows:
        seen += len(sched[steps])
        steps += 1
    return steps, max(1, round(p.train.warmup_steps * steps / args.steps))


def score(model, tokenizer, p, n: int) -> float:
    from components.evaluation.evaluate import eval_loss, test_samples

    samples = test_samples(p.paths.prepared, n, p.prepare.split_seed)
    return eval_loss(model, tokenizer, samples, [s["prompt_ids"] for s in samples], 16)


def run_plain(p, args, work: Path) -> dict:
    """The recipe a user writes from the PEFT docs, with peftpipe's hyperparameters (cosine schedule included)."""
    model, tok, r = train_plain(p, args, work)
    return {**r, "eval_loss": score(model, tok, p, args.eval_samples)}


def train_plain(p, args, work: Path):
    """(the trained PEFT model, its tokenizer, speed figures) of the plain recipe."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from components.model.base_model import load_base
    from components.data.prepare import load_prepared

    torch.set_num_threads(args.threads or os.cpu_count())
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

    targs = TrainingArguments(output_dir=str(work / "trainer_out"), per_device_train_batch_size=args.batch_size,
                              max_steps=p.train.steps, learning_rate=args.lr, lr_scheduler_type="cosine",
                              warmup_steps=min(p.train.warmup_steps, p.train.steps // 2), weight_decay=p.train.weight_decay,
                              max_grad_norm=p.train.max_grad_norm, logging_steps=10, save_strategy="no", report_to=[],
                              seed=p.seed, use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collate)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    train_rss = peak_rss_mb()
    return model, tok, {"wall_s": wall, "real_tokens": seen["real"], "computed_tokens": seen["computed"],
                        "train_peak_rss_mb": train_rss, "final_loss": out.training_loss}


def run_ours(p, args, work: Path, arm: str) -> dict:
    from components.training import loss as loss_mod
    from components.training import train as train_mod
    from components.model.trained import load_trained

    if arm == "all_logits":  # the model's own forward and loss: logits at every position
        loss_mod.decoder_and_head = lambda model: None
    m = train_mod.run_train(p, p.paths.base_model, p.paths.prepared, work / "train", work / "ckpt")
    train_rss = peak_rss_mb()
    real = m["tokens_per_s"] * m["wall_s"]
    r = {"wall_s": m["wall_s"], "real_tokens": round(real), "computed_tokens": round(real / (1 - m["padding_fraction"])),
         "final_loss": m["final_loss"], "train_peak_rss_mb": train_rss, "eval_loss": None, "precision": m["precision"],
         "precision_choice": m["precision_choice"], "rows_per_step": m["rows_per_step"], "lr": m["lr"]}
    if ARMS[arm][3]:
        model, tok, _ = load_trained(p.paths.base_model, work / "train")
        r["eval_loss"] = score(model, tok, p, args.eval_samples)
    return r


def matmul_gflops(threads: int) -> dict:
    """Best-of-5 fp32 matmul GFLOP/s: a 2048 square (the roofline), and the model's MLP shape at ~800 tokens."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, (m, k, n) in {"square_2048": (2048, 2048, 2048), "mlp_800x576x1536": (800, 576, 1536)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        out[name] = round(2 * m * k * n / best / 1e9, 1)
    return out


def run_arm(arm: str, args, child: list[str], tag: str) -> dict:
    work = Path(args.workdir)
    print(f"[{tag}] {ARMS[arm][0]} ...", flush=True)
    load_before = os.getloadavg()[0]
    subprocess.run([sys.executable, __file__, *child, "--one", arm], check=True, cwd=ROOT)
    r = read_json(work / arm / "result.json")
    r["load_avg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # other work on the machine
    steps = params(args, arm).train.steps
    r["steps"] = steps
    r["real_tokens_per_s"] = r["real_tokens"] / r["wall_s"]
    r["padding_fraction"] = 1 - r["real_tokens"] / r["computed_tokens"]
    r["s_per_step"] = r["wall_s"] / steps
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


def mean_runs(runs: list[dict]) -> dict:
    """Speed figures: medians over the runs (rounds); the rest from the first run (same seed, same model)."""
    import statistics

    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for k in ("wall_s", "real_tokens_per_s", "s_per_step"):
        out[k] = round(statistics.median(r[k] for r in runs), 4)
    out["train_peak_rss_mb"] = max(r["train_peak_rss_mb"] for r in runs)
    out["runs"] = [{k: r[k] for k in ("wall_s", "real_tokens_per_s", "eval_loss", "train_peak_rss_mb", "load_avg_1min_before_after")}
                   for r in runs]
    return out


def main(argv=None) -> int:
    import shutil

    args = parse_args(argv)
    work = Path(args.workdir)
    if args.one:
        p = params(args, args.one)
        arm_dir = work / args.one
        shutil.rmtree(arm_dir, ignore_errors=True)
        r = (run_plain(p, args, arm_dir) if args.one == "plain" else run_ours(p, args, arm_dir, args.one))
        r["peak_rss_mb"] = peak_rss_mb()
        write_json(arm_dir / "result.json", r)
        return 0
    prepare_once(params(args))
    child = argv if argv is not None else sys.argv[1:]
    child = [a for i, a in enumerate(child) if a != "--repeat"]
    threads = args.threads or os.cpu_count()
    from components.model.base_model import load_base

    n_params = sum(x.numel() for x in load_base(params(args).paths.base_model)[0].parameters())
    if not quiet_enough(args.wait):
        return 2
    roof = [matmul_gflops(threads)]
    runs: dict[str, list[dict]] = {}
    rounds: list[dict] = []
    r = 0
    while r < args.rounds:
        probe = matmul_gflops(threads) if r else roof[0]
        drift = abs(probe["square_2048"] / roof[0]["square_2048"] - 1)
        order = args.arms if r % 2 == 0 else list(reversed(args.arms))  # A B, then B A: drift hits both sides
        got = {arm: run_arm(arm, args, child, f"round {r + 1}/{args.rounds} {i}/{len(order)} {arm}")
               for i, arm in enumerate(order, 1)}
        after = matmul_gflops(threads)
        moved = max(drift, abs(after["square_2048"] / roof[0]["square_2048"] - 1)) > PROBE_DRIFT
        rounds.append({"round": r + 1, "order": order, "probe_gflops_before": probe, "probe_gflops_after": after,
                       "marked": moved, "real_tokens_per_s": {a: g["real_tokens_per_s"] for a, g in got.items()},
                       "load_avg": [g["load_avg_1min_before_after"] for g in got.values()]})
        if moved and not any(x.get("repeat_of") == r + 1 for x in rounds):
            print(f"round {r + 1}: the matmul probe moved more than {PROBE_DRIFT:.0%}: marked, run again", flush=True)
            rounds[-1]["repeat_of"] = r + 1
            continue
        for arm, g in got.items():
            runs.setdefault(arm, []).append(g)
        roof.append(after)
        report(args, argv, runs, roof, n_params, threads, rounds=rounds)  # a run cut short still leaves its figures
        r += 1
    if args.repeat and "plain" in runs:
        best = max((a for a in runs if a != "plain" and ARMS[a][3]), key=lambda a: runs[a][0]["real_tokens_per_s"])
        for arm in (best, "plain"):
            runs[arm].append(run_arm(arm, args, child, f"repeat {arm}"))
            report(args, argv, runs, roof, n_params, threads, rounds=rounds)
    roof.append(matmul_gflops(threads))
    report(args, argv, runs, roof, n_params, threads, final=True, rounds=rounds)
    return 0


def round_ratios(rounds: list[dict], arm: str) -> dict | None:
    """The arm's tokens/s over plain's within each counted round: median, min and max."""
    import statistics

    xs = [r["real_tokens_per_s"][arm] / r["real_tokens_per_s"]["plain"] for r in rounds
          if not r.get("repeat_of") and arm in r["real_tokens_per_s"] and "plain" in r["real_tokens_per_s"]]
    if not xs:
        return None
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3), "rounds": len(xs)}


def report(args, argv, runs: dict[str, list[dict]], roof: list[dict], n_params: int, threads: int, final: bool = False,
           rounds: list[dict] | None = None) -> None:
    gflops = {k: round(max(r[k] for r in roof), 1) for k in roof[0]}
    peak = gflops["square_2048"]
    results = {arm: mean_runs(rs) for arm, rs in runs.items()}
    for r in results.values():  # useful work: 4 x params FLOPs per real (not padding) token
        r["useful_gflops"] = round(4 * n_params * r["real_tokens_per_s"] / 1e9, 1)
        r["utilisation_of_fp32_matmul"] = round(r["useful_gflops"] / peak, 4)
    plain = results.get("plain")
    ratios = {}
    if plain:
        for arm, r in results.items():
            if arm != "plain":
                ratios[arm] = {"real_tokens_per_s": round(r["real_tokens_per_s"] / plain["real_tokens_per_s"], 3),
                               "real_tokens_per_s_over_rounds": round_ratios(rounds or [], arm),
                               "train_peak_rss": round(r["train_peak_rss_mb"] / plain["train_peak_rss_mb"], 3),
                               "eval_loss_diff": None if r["eval_loss"] is None else round(r["eval_loss"] - plain["eval_loss"], 4)}
    command = " ".join(["python benchmarks/train_speed.py", *(argv if argv is not None else sys.argv[1:])])
    env = env_block(threads)
    report = {"benchmark": "train_speed", "command": command, "env": env,
              "config": {k: v for k, v in vars(args).items() if k != "one"} | {"params": n_params},
              "arms": {a: {"what": ARMS[a][0], "overrides": ARMS[a][1]} for a in results},
              "fp32_matmul_gflops": gflops, "fp32_matmul_gflops_runs": roof, "complete": final, "results": results,
              "rounds": rounds or [],
              "ratios": ratios}
    out = Path(args.out)
    write_json(out / "train_speed.json", report)
    rows = []
    for arm, r in results.items():
        rat = ratios.get(arm, {})
        over = rat.get("real_tokens_per_s_over_rounds") if rat else None
        spread = f"{over['median']:.2f}x [{over['min']:.2f}..{over['max']:.2f}]" if over else "-"
        rows.append([arm, ARMS[arm][0], f"{r['real_tokens_per_s']:.1f}", f"{rat['real_tokens_per_s']:.2f}x" if rat else "1.00x",
                     spread,
                     f"{r['padding_fraction']:.1%}", f"{r['s_per_step']:.2f}", f"{r['train_peak_rss_mb']:,.0f}",
                     "-" if r["eval_loss"] is None else f"{r['eval_loss']:.4f}",
                     "-" if not rat or rat["eval_loss_diff"] is None else f"{rat['eval_loss_diff']:+.4f}",
                     f"{r['utilisation_of_fp32_matmul']:.1%}", len(r.get("runs", [r])),
                     " / ".join(f"{x:.1f}" for x in r.get("load_avg_1min_before_after", []))])
    table = markdown_table(["arm", "what", "real tokens/s", "vs plain", "vs plain per round: median [min..max]",
                            "padding computed", "s/step", "train peak RSS MB",
                            "eval loss", "vs plain", "useful FLOPs / fp32 matmul peak", "runs", "load avg before / after"], rows)
    loads = [x for r in results.values() for x in r.get("load_avg_1min_before_after", [])]
    busy = max(loads, default=0) > threads + 0.5
    if busy:  # other work shared the cores: the speed figures measure that too (eval loss and padding do not change)
        table += (f"\n**The machine was busy during this run**: 1-minute load average up to {max(loads):.1f} on "
                  f"{env['cores']} cores (other processes), and the fp32 matmul measured {peak:.0f} GFLOP/s. Tokens/s and "
                  f"their ratios here measure that contention as much as the code; eval loss, padding and memory do not "
                  f"depend on it.\n")
    flags = ", ".join(env["isa"]) or "none of avx2/avx512f/avx512_bf16/amx"
    from components.core.atomic import atomic_write_text

    atomic_write_text(out / "train_speed.md", (
        f"# Training speed against the plain recipe, lever by lever\n\nCommand: `{command}`\n\n"
        f"LoRA r=8 on q_proj/v_proj (dropout {params(args).train.lora.dropout}), {args.steps} steps x batch "
        f"{args.batch_size} examples, lr {args.lr}, cosine schedule with {params(args).train.warmup_steps} warmup steps in "
        f"every arm, max length {args.max_length}, fp32, {threads} threads on {env['cpu']} ({env['cores']} cores), "
        f"dolly_open_qa; eval loss on the first {args.eval_samples} test questions. Peak RSS is read when training ends "
        f"(before scoring).{'' if final else ' **Partial: the run had not finished when this was written.**'}\n\n"
        f"Roofline, measured in the same run (best of the measurements before and after the arms): "
        f"fp32 matmul {peak:.0f} GFLOP/s on a 2048 square, {gflops['mlp_800x576x1536']:.0f} GFLOP/s at the model's MLP "
        f"shape (800 tokens x 576 x 1536). Useful FLOPs = 4 x {n_params / 1e6:.1f}M params x real tokens/s. bf16: "
        f"{'native on this CPU' if env['bf16_native'] else 'not native on this CPU'} (detected: {flags}); every arm is "
        f"fp32 unless it says otherwise. {len([x for x in rounds or [] if not x.get('repeat_of')])} interleaved round(s) "
        f"(order reversed every other round; a round whose matmul probe moved more than {PROBE_DRIFT:.0%} is marked and "
        f"run again; load average before/after each arm in the table).\n\n{table}\n"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        names = list(results)
        ax[0].barh(names, [r["real_tokens_per_s"] for r in results.values()])
        ax[0].axvline(peak * 1e9 / (4 * n_params), color="k", ls="--", label="fp32 matmul roofline")
        if plain:
            ax[0].axvline(2.5 * plain["real_tokens_per_s"], color="tab:red", ls=":", label="2.5x plain")
        ax[0].set_xlabel("real tokens/s")
        ax[0].legend(fontsize=8)
        ax[1].barh(names, [r["train_peak_rss_mb"] / 1024 for r in results.values()], color="tab:orange")
        ax[1].set_xlabel("train peak RSS GB")
        ax[1].set_yticklabels([])
        fig.tight_layout()
        fig.savefig(out / "train_speed.png", dpi=120)
    except ImportError:
        pass
    if final:
        print(table)
        print(f"vs plain: {ratios}")


if __name__ == "__main__":
    sys.exit(main())
