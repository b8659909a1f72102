"""Default learning rates measured on real data: 3 learning rates x LoRA, P-Tuning v2 and prompt tuning, each
trained for the same time budget on dolly_open_qa, scored against zero-shot.

    python benchmarks/recipes.py                        # 9 cells at train.budget_minutes=6, 100 test questions
    python benchmarks/recipes.py --methods lora --minutes 3

Each cell is one process: the train stage under `train.budget_minutes` (params.yaml's defaults otherwise, with
the method's `lr` set), then the evaluate stage on the same seeded test questions as the zero-shot base. A
cell's result is kept under --workdir with the key of what made it (data, budget, the train config with the
method's block, the components/ code that trains and evaluates), so the sweep can run over several sittings; a
changed input runs that cell again. Per method: the
winner (highest ROUGE-L), the runner-up, and each cell's gain over zero-shot with a paired bootstrap 95%
interval. Writes docs/benchmarks/recipes.{json,md}. Run it alone on the machine (it refuses a busy one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from common import DATASETS, ROOT, env_block, made_from, markdown_table, quiet_enough, read_json, write_json
from methods import bench_params, prepare_once

from components.methods import NAMES

GRID = {"lora": [3e-4, 1e-3, 3e-3], "ptuning_v2": [3e-3, 1e-2, 3e-2], "prompt": [3e-3, 1e-2, 3e-2]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--methods", nargs="+", default=list(GRID), choices=list(GRID))
    p.add_argument("--minutes", type=float, default=6.0, help="train.budget_minutes of every cell")
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--wait", type=float, default=0, metavar="MINUTES", help="wait this long for a quiet machine")
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "recipes"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--one", nargs=2, metavar=("METHOD", "LR"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def params(args, method: str | None = None, lr: float | None = None):
    extra = [f"evaluate.max_samples={args.eval_samples}", "evaluate.drift_max_new_tokens=0"]
    if method:
        extra += [f"train.method={method}", f"train.{method}.lr={lr}", f"train.budget_minutes={args.minutes}"]
    return bench_params(args.workdir, args.data, args.max_length, args.threads, extra)


def cell_key(args, method: str | None, lr: float | None) -> str:
    ident = {"eval_samples": args.eval_samples, "max_length": args.max_length, **made_from(args.data)}
    if method:  # the train config with this method's block only: another method's default does not touch the cell
        p = params(args, method, lr)
        ident.update(minutes=args.minutes, threads=args.threads,
                     train=p.train.model_dump(exclude={m for m in NAMES if m != method}))
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cell_dir(args, method: str | None, lr: float | None) -> Path:
    return Path(args.workdir) / ("zero_shot" if method is None else f"{method}_lr{lr:g}")


def run_one(args, method: str | None, lr: float | None) -> dict:
    import shutil

    from components.core.runtime import quiet_env
    from components.evaluation.evaluate import run_evaluate
    from components.training.train import run_train

    quiet_env()
    p, work = params(args, method, lr), cell_dir(args, method, lr)
    if method is None:
        ev = run_evaluate(p, "base", p.paths.base_model, p.paths.prepared, None, work / "eval")
        return {"eval": {k: ev[k] for k in ("rouge-l", "bleu-4", "exact_match", "token_f1", "eval_loss")}}
    shutil.rmtree(work / "train", ignore_errors=True)
    tr = run_train(p, p.paths.base_model, p.paths.prepared, work / "train", work / "ckpt")
    ev = run_evaluate(p, "tuned", p.paths.base_model, p.paths.prepared, work / "train", work / "eval")
    return {"train": {k: tr.get(k) for k in ("steps", "epochs", "lr", "wall_s", "final_loss", "health", "precision")},
            "eval": {k: ev[k] for k in ("rouge-l", "bleu-4", "exact_match", "token_f1", "eval_loss")}}


def gain(work_cell: Path, work_zero: Path) -> dict:
    """ROUGE-L of one cell's answers over another's (zero-shot, or the incumbent default), per question, with a
    paired bootstrap 95% interval."""
    from components.evaluation.evaluate import read_predictions
    from components.evaluation.quality import paired_bootstrap

    a, b = read_predictions(work_cell / "eval"), read_predictions(work_zero / "eval")
    ids = sorted(set(a) & set(b))
    return paired_bootstrap([a[i]["scores"]["rouge-l"] for i in ids], [b[i]["scores"]["rouge-l"] for i in ids])


def pick(args, method: str, rows: list[dict]) -> dict:
    """The method's default after the sweep. The top ROUGE-L cell replaces params.yaml's current rate only when
    that rate is not on the grid or the top cell beats it per question (paired bootstrap interval above 0): a
    default does not move on noise."""
    ranked = sorted(rows, key=lambda r: -r["eval"]["rouge-l"])
    top, before = ranked[0], params(args).train.model_copy(update={"method": method}).method_lr()
    on_grid = next((r for r in rows if abs(r["lr"] - before) < 1e-12), None)
    over = None if on_grid is None or on_grid is top else gain(cell_dir(args, method, top["lr"]), cell_dir(args, method, before))
    keep = over is not None and over["low"] <= 0
    return {"winner": top["lr"], "runner_up": ranked[1]["lr"] if len(ranked) > 1 else None,
            "winner_rouge-l": top["eval"]["rouge-l"], "winner_gain": top["gain"], "default_before": before,
            "winner_over_default_before": over, "default": before if keep else top["lr"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        method, lr = (None, None) if args.one[0] == "zero_shot" else (args.one[0], float(args.one[1]))
        write_json(cell_dir(args, method, lr) / "result.json", {"key": cell_key(args, method, lr),
                                                                **run_one(args, method, lr)})
        return 0

    prepare_once(params(args))
    if not quiet_enough(args.wait):
        return 2
    cells = [(None, None)] + [(m, lr) for m in args.methods for lr in GRID[m]]
    child = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--one"]
    results = {}
    for method, lr in cells:
        d = cell_dir(args, method, lr)
        f = d / "result.json"
        if not (f.exists() and read_json(f).get("key") == cell_key(args, method, lr)):
            print(f"[{d.name}] ...", flush=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, *child, "--one", method or "zero_shot", str(lr)], check=True,
                           cwd=ROOT)
            print(f"[{d.name}] {time.perf_counter() - t0:.0f} s", flush=True)
        results[d.name] = read_json(f)
    report(args, argv, results)
    return 0


def health(train: dict) -> str:
    """The train stage's health verdict in a few words (a stopped run keeps the best weights it saw)."""
    h = train.get("health") or {}
    return "ok" if h.get("ok", True) else f"stopped at step {h.get('step')}: {h.get('reason')}"


def report(args, argv, results: dict) -> None:
    zero = cell_dir(args, None, None)
    cells = {}
    for m in args.methods:
        for lr in GRID[m]:
            r = results[cell_dir(args, m, lr).name]
            cells.setdefault(m, []).append({"lr": lr, **r, "gain": gain(cell_dir(args, m, lr), zero)})
    picks = {m: pick(args, m, rows) for m, rows in cells.items()}
    base = results["zero_shot"]["eval"]
    out = {"benchmark": "recipes", "command": "python benchmarks/recipes.py " + " ".join(argv or sys.argv[1:]),
           "env": env_block(args.threads), "data": args.data, "budget_minutes": args.minutes, "grid": GRID,
           "zero_shot": base, "cells": cells, "picks": picks,
           "ratios": {m: {"winner_rouge-l_minus_zero_shot": round(p["winner_rouge-l"] - base["rouge-l"], 2)}
                      for m, p in picks.items()}}
    write_json(Path(args.out) / "recipes.json", out)
    rows = [[m, f"{r['lr']:g}", r["train"]["steps"], r["train"]["epochs"], r["eval"]["rouge-l"],
             f"{r['gain']['mean']:+.2f} ({r['gain']['low']:+.2f}..{r['gain']['high']:+.2f})", r["eval"]["exact_match"],
             r["eval"]["token_f1"], health(r["train"]), "winner" if picks[m]["winner"] == r["lr"] else
             "runner-up" if picks[m]["runner_up"] == r["lr"] else "",
             "yes" if picks[m]["default"] == r["lr"] else ""] for m, rs in cells.items() for r in rs]
    md = [f"# Recipes: learning rates at a {args.minutes:g}-minute training budget", "",
          f"`{out['command']}` on {Path(args.data).name}, {args.eval_samples} seeded test questions; zero-shot "
          f"ROUGE-L {base['rouge-l']:.2f}. CPU: {out['env'].get('cpu')}, flags "
          f"{', '.join(out['env'].get('isa') or [])}.", "",
          markdown_table(["method", "lr", "steps", "epochs", "ROUGE-L", "gain over zero-shot (95% CI)",
                          "exact match", "token F1", "training health", "", "default"], rows), "",
          "The top ROUGE-L cell becomes a method's default only where params.yaml's rate before the sweep was off the "
          "grid or the top cell beats it per question (paired bootstrap interval above 0); otherwise the default stays.", ""]
    for m, q in picks.items():
        o = q["winner_over_default_before"]
        md.append(f"- {m}: default before {q['default_before']:g}; top {q['winner']:g}" +
                  (f", over the default before {o['mean']:+.2f} ({o['low']:+.2f}..{o['high']:+.2f})" if o else
                   " (the default before)" if q["winner"] == q["default_before"] else " (the default before was off the grid)") +
                  f"; default now {q['default']:g}")
    (Path(args.out) / "recipes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
