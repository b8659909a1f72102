"""Every fine-tuning method side by side on a real QA set, with the same data and training budget.

    python benchmarks/methods.py                     # all methods, dolly_open_qa, the defaults below
    python benchmarks/methods.py --methods lora prompt --steps 20
    python benchmarks/methods.py --minutes 6          # every method on the same 6-minute training budget

Each method runs in its own process (so peak memory is its own): train (the pipeline's train stage),
then evaluate on the first --eval-samples test questions. Zero-shot (the base model) and ICL are the
no-training baselines. Zero-shot also answers the drift prompts once; each trained method's drift (its loss on
those answers over the base model's, gates.max_drift) is a column. Results are cached per method in --workdir, so an interrupted run continues.
Writes docs/benchmarks/methods.json, methods.md and methods.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from common import DATASETS, ROOT, dir_size_mb, env_block, made_from, markdown_table, peak_rss_mb, read_json, write_json

from components.methods import NAMES, get_method, trains  # common put the repo root on sys.path

BASELINES = ["zero_shot"] + [m for m in NAMES if not trains(m)]  # no training: the base model and ICL


def trained_methods() -> list[str]:
    """Every method in components/methods/ that trains, taken round-robin over the families (one of each
    family early), so a partial run already compares them."""
    from itertools import zip_longest

    families: dict[str, list[str]] = {}
    for m in NAMES:
        if trains(m):
            families.setdefault(get_method(m).FAMILY, []).append(m)
    return [m for row in zip_longest(*families.values()) for m in row if m]


TRAINED = trained_methods()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=BASELINES + TRAINED)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--minutes", type=float, help="train.budget_minutes: each method trains what fits (at most --steps)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "methods"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--set", "-S", action="append", default=[], help="extra params override, KEY=VALUE")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method in this process
    return p.parse_args(argv)


def params(args):
    """The pipeline's typed params for this benchmark, every path under the workdir."""
    return bench_params(args.workdir, args.data, args.max_length, args.threads, [
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.checkpoint_every={args.steps}",
        f"evaluate.max_samples={args.eval_samples}", f"evaluate.max_new_tokens={args.max_new_tokens}",
        f"evaluate.batch_size={args.eval_batch_size}"]
        + ([f"train.budget_minutes={args.minutes}"] if args.minutes else []) + args.set)


def bench_params(workdir, data: str, max_length: int, threads: int, extra: list[str]):
    """Params on a real QA file with every path under workdir (shared by the benchmarks)."""
    from components.config.params import Paths, load_params

    paths = [f"paths.{k}={Path(workdir) / v}" for k, v in Paths().model_dump().items()]
    return load_params(ROOT / "params.yaml", paths + [
        f"data.path={data}", "data.format=auto", "prepare.system_prompt=null", f"prepare.max_length={max_length}",
        f"train.threads={threads}"] + extra)


def config_key(args, method: str) -> str:
    """Results are reused only for the same budget, method config and options, and what common.made_from names (the
    train/evaluate code, the data's content, the machine, the library versions)."""
    keys = ("data", "steps", "minutes", "batch_size", "max_length", "eval_samples", "max_new_tokens", "eval_batch_size", "threads",
            "set")
    ident: dict = {k: getattr(args, k) for k in keys} | made_from(args.data)
    if method != "zero_shot":
        p = params(args)
        p.train.method = method
        ident["method_config"] = p.train.method_config().model_dump()
        ident["lr"] = p.train.method_lr()
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare_once(p) -> dict:
    from components.model.base_model import materialise
    from components.data.prepare import run_prepare
    from components.data.validate import run_validate

    if not (Path(p.paths.base_model) / "config.json").exists():
        materialise(p.model, p.paths.base_model)
    if not (Path(p.paths.prepared) / "stats.json").exists():
        run_validate(p.data, p.validate_, p.paths.validated)
        run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared)
    return json.loads((Path(p.paths.prepared) / "stats.json").read_text())


def run_one(method: str, args) -> dict:
    """Train (unless a baseline) and evaluate one method in this process."""
    from components.evaluation.evaluate import run_evaluate
    from components.training.train import run_train
    from components.core.runtime import quiet_env

    quiet_env()
    p = params(args)
    work = Path(args.workdir) / method
    t0 = time.perf_counter()
    result: dict = {"method": method}
    if method == "zero_shot":
        ev = run_evaluate(p, "base", p.paths.base_model, p.paths.prepared, None, work / "eval")
        result.update({"trainable_params": 0, "adapter_mb": 0.0, "train_peak_rss_mb": None})
    else:
        p.train.method = method
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        tr = run_train(p, p.paths.base_model, p.paths.prepared, work / "train", work / "ckpt")
        result.update({k: tr.get(k) for k in ("trainable_params", "total_params", "tokens_per_s", "padding_fraction",
                                              "final_loss", "first_loss", "wall_s", "lr", "family", "health")})
        result["train_wall_s"] = result.pop("wall_s")
        result["train_peak_rss_mb"] = peak_rss_mb()
        result["adapter_mb"] = dir_size_mb(work / "train")
        ev = run_evaluate(p, "tuned", p.paths.base_model, p.paths.prepared, work / "train", work / "eval",
                          eval_base_dir=Path(args.workdir) / "zero_shot" / "eval")
        result["steps"] = tr.get("steps_done", tr.get("steps"))
    if method != "zero_shot" and not trains(method):  # nothing trains (ICL): only evaluation figures apply
        result.update({"train_peak_rss_mb": None, "tokens_per_s": None, "train_wall_s": None})
    result.update({k: ev[k] for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "eval_loss")})
    result["drift"] = (ev.get("drift") or {}).get("drift") if method != "zero_shot" else None
    result["generation_tokens_per_s"] = ev["generation"]["tokens_per_s"]
    result["peak_rss_mb"] = peak_rss_mb()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def significance(work: Path, methods: list[str]) -> dict[str, dict]:
    """Paired bootstrap 95% interval of each method's per-question ROUGE-L gain over zero-shot and over ICL."""
    from components.evaluation.evaluate import read_predictions
    from components.evaluation.quality import paired_bootstrap

    preds = {m: read_predictions(work / m / "eval") for m in methods if (work / m / "eval" / "predictions.jsonl").exists()}
    out: dict[str, dict] = {}
    for m in preds:
        for ref in ("zero_shot", "icl"):
            if ref in preds and ref != m:
                ids = sorted(set(preds[m]) & set(preds[ref]))
                ci = paired_bootstrap([preds[m][i]["scores"]["rouge-l"] for i in ids],
                                      [preds[ref][i]["scores"]["rouge-l"] for i in ids])
                out.setdefault(m, {})[f"rouge-l_gain_over_{ref}"] = {**ci, "significant": ci["low"] > 0}
    return out


def ratios(results: dict[str, dict]) -> dict:
    out: dict = {}
    zs, icl, full = results.get("zero_shot"), results.get("icl"), results.get("full")
    for m, r in results.items():
        entry = {}
        if zs:
            entry["rouge-l_minus_zero_shot"] = round(r["rouge-l"] - zs["rouge-l"], 2)
        if icl:
            entry["rouge-l_minus_icl"] = round(r["rouge-l"] - icl["rouge-l"], 2)
        if full and r.get("trainable_params") is not None and full.get("trainable_params"):
            entry["trainable_vs_full"] = round(r["trainable_params"] / full["trainable_params"], 6)
            if r.get("tokens_per_s") and full.get("tokens_per_s"):
                entry["train_tokens_per_s_vs_full"] = round(r["tokens_per_s"] / full["tokens_per_s"], 3)
            if r.get("train_peak_rss_mb") and full.get("train_peak_rss_mb"):
                entry["train_peak_rss_vs_full"] = round(r["train_peak_rss_mb"] / full["train_peak_rss_mb"], 3)
        out[m] = entry
    if full and "lora" in results:
        out["lora_gap_to_full_rouge-l"] = round(results["lora"]["rouge-l"] - full["rouge-l"], 2)
    return out


def table(results: dict[str, dict], sig: dict[str, dict] | None = None) -> str:
    headers = ["method", "family", "trainable", "trainable %", "adapter MB", "train tok/s", "train peak RSS MB",
               "train s", "final train loss", "eval loss", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L",
               "ROUGE-L vs zero-shot (95% CI)", "vs ICL", "steps", "drift", "training health"]
    zs, icl = results.get("zero_shot", {}), results.get("icl", {})
    rows = []
    for m, r in results.items():
        total = r.get("total_params") or (results.get("full") or {}).get("total_params")
        pct = 100 * r["trainable_params"] / total if total and r.get("trainable_params") is not None else None
        fam = r.get("family") or ("baseline" if m in BASELINES else None)
        rows.append([m, fam, f"{r['trainable_params']:,}", None if pct is None else f"{pct:.4g}", r.get("adapter_mb"),
                     r.get("tokens_per_s"), r.get("train_peak_rss_mb"), r.get("train_wall_s"), r.get("final_loss"),
                     r["eval_loss"], r["bleu-4"], r["rouge-1"], r["rouge-2"], r["rouge-l"],
                     _gain(r, zs, (sig or {}).get(m, {}).get("rouge-l_gain_over_zero_shot")),
                     f"{r['rouge-l'] - icl['rouge-l']:+.2f}" if icl else None, r.get("steps"),
                     None if r.get("drift") is None else f"{r['drift']:+.3f}", _health(r.get("health"))])
    return markdown_table(headers, rows)


def _health(h: dict | None) -> str | None:
    if not h:
        return None
    return "ok" if h.get("ok") else f"stopped at step {h['step']} ({h['reason'].split(' above')[0]}); kept step {h['best_step']}"


def _gain(r: dict, ref: dict, ci: dict | None) -> str | None:
    if not ref:
        return None
    text = f"{r['rouge-l'] - ref['rouge-l']:+.2f}"
    return text + (f" ({ci['low']:+.1f}..{ci['high']:+.1f}){' *' if ci['significant'] else ''}" if ci else "")


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    total = (results.get("full") or {}).get("total_params")
    for m, r in results.items():
        pct = 100 * r["trainable_params"] / total if total else 0
        x = max(pct, 1e-4)
        a.scatter(x, r["rouge-l"], s=30)
        a.annotate(m, (x, r["rouge-l"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    a.set_xscale("log")
    a.set_xlabel("trainable parameters, % of the model (baselines at 1e-4)")
    a.set_ylabel("ROUGE-L (test questions)")
    a.set_title("Quality against trainable parameters")
    trained = [m for m in results if results[m].get("train_wall_s")]
    xs = range(len(trained))
    b.bar([x - 0.2 for x in xs], [results[m]["train_peak_rss_mb"] / 1024 for m in trained], 0.4, label="train peak RSS (GB)")
    b2 = b.twinx()
    b2.bar([x + 0.2 for x in xs], [results[m]["train_wall_s"] / 60 for m in trained], 0.4, color="tab:orange",
           label="train wall time (min)")
    b.set_xticks(list(xs), trained, rotation=60, ha="right", fontsize=8)
    b.set_ylabel("peak RSS, GB")
    b2.set_ylabel("train wall time, min")
    b.set_title("Memory and time per method")
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.workdir)
    if args.one:
        write_json(work / args.one / "result.json", {"key": config_key(args, args.one), **run_one(args.one, args)})
        return 0
    from rich.console import Console

    console = Console()
    p = params(args)
    stats = prepare_once(p)
    console.print(f"data: {args.data} -> {stats['train_rows']} train / {stats['test_rows']} test rows; "
                  f"{args.steps} steps x batch {args.batch_size}, eval on {args.eval_samples} questions")
    results = {}
    child_args = [a for a in (argv if argv is not None else sys.argv[1:])]
    for i, m in enumerate(args.methods, 1):
        cached = read_json(work / m / "result.json")
        if not (cached and cached.get("key") == config_key(args, m)):
            console.print(f"[{i}/{len(args.methods)}] {m} ...")
            proc = subprocess.run([sys.executable, __file__, *child_args, "--one", m], cwd=ROOT)
            if proc.returncode != 0:
                console.print(f"[red]{m} failed (exit {proc.returncode}); continuing[/red]")
                continue
            cached = read_json(work / m / "result.json")
        results[m] = {k: v for k, v in cached.items() if k != "key"}
        r = results[m]
        console.print(f"  {m}: ROUGE-L {r['rouge-l']:.2f}  eval loss {r['eval_loss']:.3f}  wall {r['wall_s']:.0f} s")
    out = Path(args.out)
    report = {"benchmark": "methods", "command": " ".join(["python benchmarks/methods.py", *child_args]),
              "env": env_block(p.train.threads or __import__("os").cpu_count()),
              "config": {"data": args.data, "train_rows": stats["train_rows"], "test_rows": stats["test_rows"],
                         "steps": args.steps, "budget_minutes": args.minutes, "batch_size": args.batch_size, "max_length": args.max_length,
                         "eval_samples": args.eval_samples, "max_new_tokens": args.max_new_tokens, "overrides": args.set},
              "results": results, "ratios": ratios(results), "significance": significance(work, list(results))}
    write_json(out / "methods.json", report)
    md = (f"# Methods side by side\n\nCommand: `{report['command']}`\n\n"
          f"Data: `{Path(args.data).relative_to(ROOT.parent) if Path(args.data).is_relative_to(ROOT.parent) else args.data}` "
          f"({stats['train_rows']} train rows; the first {args.eval_samples} of {stats['test_rows']} test questions). "
          + (f"Budget: {args.minutes:g} minutes of training per method (at most {args.steps} steps) x batch "
             f"{args.batch_size}" if args.minutes else f"Budget: {args.steps} steps x batch {args.batch_size}") + f", max length {args.max_length}; greedy answers of up to "
          f"{args.max_new_tokens} tokens. Machine: {report['env']['cpu']}, {report['env']['threads']} threads, "
          f"torch {report['env']['torch']}, peft {report['env']['peft']}.\n\n" + table(results, report["significance"])
          + "\n`*`: the paired bootstrap 95% interval of the per-question ROUGE-L gain lies above zero.\n")
    from components.core.atomic import atomic_write_text

    atomic_write_text(out / "methods.md", md)
    if len(results) > 1:
        plot(results, out / "methods.png")
    console.print(table(results, report["significance"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
