"""Time to quality: ROUGE-L over zero-shot after the same training time, the plain recipe against peftpipe.

    python benchmarks/time_to_quality.py                      # plain: 100 steps; peftpipe: the plain recipe's time
    python benchmarks/time_to_quality.py --plain-steps 150 --set train.batch_tokens=2048
    python benchmarks/time_to_quality.py ... --reuse zero_shot plain   # train and score peftpipe's arm again only

The plain recipe (Trainer + PEFT + padding collator, LoRA r=8 on q/v, batch 8, lr 1e-3, cosine; the same recipe
as benchmarks/train_speed.py) trains --plain-steps steps and its wall time is measured. peftpipe's train stage,
with params.yaml's defaults (and --set overrides), then gets exactly that time as `train.budget_minutes`:
it plans as many steps as fit and completes its schedule. Both models and the zero-shot base answer the same
seeded test questions of dolly_open_qa (the evaluate stage's generation and scoring); the gains over
zero-shot and peftpipe's gain over the plain recipe come with paired bootstrap 95% intervals. Each arm runs
in its own process, one after another, on a quiet machine (it refuses above a 1-minute load average of 1.5).
Writes docs/benchmarks/time_to_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

from common import DATASETS, ROOT, env_block, markdown_table, quiet_enough, read_json, write_json
from methods import bench_params, prepare_once

ARMS = ("zero_shot", "plain", "peftpipe")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--plain-steps", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="peftpipe arm's params overrides")
    p.add_argument("--wait", type=float, default=0, metavar="MINUTES", help="wait this long for a quiet machine")
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "train_speed"), help="prepared data (shared)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--reuse", nargs="*", default=[], choices=ARMS[:2], metavar="ARM",
                   help="keep these arms' results from the last run (zero_shot, plain) when made with the same settings")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def params(args, arm: str, minutes: float | None = None):
    base = [f"evaluate.max_samples={args.eval_samples}", "evaluate.drift_max_new_tokens=0"]  # drift: not measured here
    if arm == "peftpipe":
        return bench_params(args.workdir, args.data, args.max_length, args.threads,
                            [*base, f"train.budget_minutes={minutes}",
                             "train.checkpoint_every=100000", *args.set])
    return bench_params(args.workdir, args.data, args.max_length, args.threads, base)


def run_one(args) -> dict:
    """One arm in this process: train (plain or peftpipe), then the evaluate stage's scoring."""
    from components.core.runtime import quiet_env
    from components.evaluation.evaluate import evaluate_model, run_evaluate, test_samples

    quiet_env()
    work = Path(args.workdir).parent / "time_to_quality" / args.one
    p = params(args, args.one, args.minutes)
    if args.one == "zero_shot":
        ev = run_evaluate(p, "base", p.paths.base_model, p.paths.prepared, None, work / "eval")
        return {"eval": ev}
    if args.one == "plain":
        import train_speed

        recipe = Namespace(workdir=args.workdir, data=args.data, max_length=args.max_length, threads=args.threads,
                           steps=args.plain_steps, batch_size=8, lr=1e-3, batch_tokens=None)
        tp = train_speed.params(recipe, "plain")
        model, tok, r = train_speed.train_plain(tp, recipe, work)
        samples = test_samples(p.paths.prepared, p.evaluate.max_samples, p.prepare.split_seed)
        ev = evaluate_model(model, tok, samples, p, work / "eval", "tuned")
        return {"eval": ev, "train_wall_s": r["wall_s"], "steps": args.plain_steps, "rows_seen": args.plain_steps * 8,
                "real_tokens": r["real_tokens"], "recipe": "Trainer + PEFT LoRA r=8 q/v, batch 8, lr 0.001, cosine"}
    from components.training.train import run_train

    import shutil

    shutil.rmtree(work, ignore_errors=True)
    m = run_train(p, p.paths.base_model, p.paths.prepared, work / "train", work / "ckpt")
    ev = run_evaluate(p, "tuned", p.paths.base_model, p.paths.prepared, work / "train", work / "eval")
    return {"eval": ev, "train_wall_s": m["wall_s"], "steps": m["steps"], "rows_seen": round(m["steps"] * m["rows_per_step"]),
            "real_tokens": round(m["tokens_per_s"] * m["wall_s"]), "budget": m.get("budget"),
            "recipe": f"train stage, params.yaml defaults{' + ' + ' '.join(args.set) if args.set else ''}: "
                      f"{p.train.method} r={p.train.lora.r} on {','.join(p.train.lora.target_modules)}, "
                      f"batch {p.train.batch_tokens and f'{p.train.batch_tokens} tokens' or p.train.batch_size}, "
                      f"lr {m['lr']:.3g}, budget {args.minutes:.2f} min"}


def settings(args) -> dict:
    """What an arm's result is made from (its code aside): reused only when these are the same."""
    return {k: getattr(args, k) for k in ("data", "plain_steps", "eval_samples", "max_length", "threads")}


def predictions(arm_dir: Path) -> dict[str, dict]:
    from components.evaluation.evaluate import read_predictions

    return read_predictions(arm_dir / "eval")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        r = run_one(args) | {"settings": settings(args)}
        write_json(Path(args.workdir).parent / "time_to_quality" / args.one / "result.json", r)
        return 0

    prepare_once(params(args, "zero_shot"))
    if not quiet_enough(args.wait):
        return 2
    child = [a for a in (argv if argv is not None else sys.argv[1:])]
    work = Path(args.workdir).parent / "time_to_quality"
    results = {}
    for arm in ARMS:
        if arm in args.reuse:
            kept = read_json(work / arm / "result.json")
            if kept is None or kept.get("settings", settings(args)) != settings(args):
                raise SystemExit(f"--reuse {arm}: no result made with these settings in {work / arm}")
            results[arm] = kept | {"reused": True, "settings_recorded": "settings" in kept}
            print(f"[{arm}] reused ({work / arm / 'result.json'})", flush=True)
            continue
        extra = ["--minutes", str(results["plain"]["train_wall_s"] / 60)] if arm == "peftpipe" else []
        print(f"[{arm}] ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, *child, "--one", arm, *extra], check=True, cwd=ROOT)
        results[arm] = read_json(work / arm / "result.json") | {"process_wall_s": round(time.perf_counter() - t0, 1)}
    report(args, argv, results, work)
    return 0


def report(args, argv, results: dict, work: Path) -> None:
    from components.evaluation.quality import paired_bootstrap

    preds = {arm: predictions(work / arm) for arm in ARMS}
    ids = sorted(set.intersection(*(set(p) for p in preds.values())))
    rl = {arm: [preds[arm][i]["scores"]["rouge-l"] for i in ids] for arm in ARMS}
    gains = {arm: paired_bootstrap(rl[arm], rl["zero_shot"], 2000) for arm in ("plain", "peftpipe")}
    over_plain = paired_bootstrap(rl["peftpipe"], rl["plain"], 2000)
    import os

    threads = args.threads or os.cpu_count()
    command = " ".join(["python benchmarks/time_to_quality.py", *(argv if argv is not None else sys.argv[1:])])
    summary = {arm: {k: results[arm].get(k) for k in ("train_wall_s", "steps", "rows_seen", "real_tokens", "recipe", "budget")}
               | {m: results[arm]["eval"][m] for m in ("rouge-l", "bleu-4", "eval_loss")}
               | {"exact_match": results[arm]["eval"].get("exact_match"), "reused_from_earlier_run": results[arm].get("reused", False)}
               for arm in ARMS}  # where the stage scores it
    report = {"benchmark": "time_to_quality", "command": command, "env": env_block(threads),
              "config": {k: v for k, v in vars(args).items() if k not in ("one", "minutes")}, "questions": len(ids),
              "results": summary, "gain_over_zero_shot": gains, "peftpipe_over_plain": over_plain,
              "ratios": {"peftpipe_over_plain_rouge_l_gain": round(gains["peftpipe"]["mean"] / gains["plain"]["mean"], 3)
                         if gains["plain"]["mean"] else None,
                         "train_time_peftpipe_over_plain": round(results["peftpipe"]["train_wall_s"]
                                                                 / results["plain"]["train_wall_s"], 3)}}
    out = Path(args.out)
    write_json(out / "time_to_quality.json", report)
    fmt_ci = lambda c: f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"  # noqa: E731
    rows = []
    for arm in ARMS:
        r = summary[arm]
        rows.append([arm, r["recipe"] or "the base model, no training",
                     "-" if r["train_wall_s"] is None else f"{r['train_wall_s'] / 60:.1f}",
                     r["steps"] or "-", r["rows_seen"] or "-", f"{r['rouge-l']:.2f}", f"{r['bleu-4']:.2f}",
                     "-" if arm == "zero_shot" else fmt_ci(gains[arm])])
    table = markdown_table(["arm", "recipe", "training min", "steps", "rows seen", "ROUGE-L", "BLEU-4",
                            "ROUGE-L gain over zero-shot [95% CI]"], rows)
    env = report["env"]
    from components.core.atomic import atomic_write_text

    atomic_write_text(out / "time_to_quality.md", (
        f"# Time to quality: the same training time, plain recipe against peftpipe\n\nCommand: `{command}`\n\n"
        f"dolly_open_qa, {len(ids)} seeded test questions, greedy answers scored by the evaluate stage; "
        f"{threads} threads on {env['cpu']} ({', '.join(env['isa']) or 'no avx2/avx512'}); load average "
        f"{env['load_average']} at the end. peftpipe trained under `train.budget_minutes` set to the plain "
        f"recipe's measured training time.\n\n{table}\n"
        f"peftpipe over the plain recipe, per question (paired bootstrap, 2,000 resamples): ROUGE-L "
        f"{fmt_ci(over_plain)}.\n"))
    print(table)
    print(json.dumps({"gain_over_zero_shot": gains, "peftpipe_over_plain": over_plain}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
