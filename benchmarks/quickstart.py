"""The README's quick start, as a new user runs it: a fresh clone, `bash scripts/setup.sh && .venv/bin/peftpipe run`.

    python benchmarks/quickstart.py                 # clones this checkout's HEAD into a temporary folder
    python benchmarks/quickstart.py --keep DIR      # clone into DIR and keep it (to look at the bundle)
    python benchmarks/quickstart.py --drift-lr 0.01  # then train again at 10x the learning rate: the drift gate's test

With --drift-lr the same clone runs `peftpipe run -S train.lr=<lr>` afterwards (evaluate_base reused) and the
report puts the two runs' drift (gates.max_drift) side by side with the task gates' verdicts: the default threshold
must pass the first and fail the second while the second still passes every task gate.

Records what the run printed (line count, stages), what it measured (base vs fine-tuned metrics, every
gate verdict, the quantized variants' ROUGE-L against fp32 and whether each ships) and how long setup
and the run took. Writes docs/benchmarks/quickstart.{json,md}. Run it alone: its times are the machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, env_block, markdown_table, warn_if_busy, write_json

METRICS = ("rouge-l", "exact_match", "token_f1", "bleu-4")


def run(cmd: str, cwd: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")})
    # bytes as the terminal gets them: text mode would turn a progress bar's carriage returns into lines
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), round(time.perf_counter() - t0, 1)


def read_gates(folder: Path) -> dict:
    f = folder / "artifacts" / "gate" / "gates.json"
    return json.loads(f.read_text()) if f.exists() else {}


def gate_of(gates: dict, name: str) -> dict | None:
    return next(({"passed": g["passed"], "value": g["value"], "threshold": g["threshold"], "line": g["line"]}
                 for g in gates.get("gates", []) if g["gate"] == name), None)


def drift_table(drift: dict) -> str:
    """The default run's drift beside the destructive run's (when there is one), with the verdicts."""
    runs = [("default", drift.get("default"), drift.get("max_drift"), True)]
    if "destructive" in drift:
        x = drift["destructive"]
        runs.append((f"lr {x['lr']}", x["drift"], x["max_drift"], x["task_gates_passed"]))
    rows = [[arm, d["prompts"], f"{d['base_loss']:.3f}", f"{d['tuned_loss']:.3f}", f"{d['drift']:+.3f}",
             f"{100 * d['first_sentence_match']:.0f}%", "yes" if task else "no",
             "-" if g is None else ("PASS" if g["passed"] else "FAIL") + f" (<= {g['threshold']})"]
            for arm, d, g, task in runs if d and "drift" in d]
    return markdown_table(["run", "drift prompts", "base loss", "tuned loss", "drift (nats/token)",
                           "first sentence kept", "task gates pass", "max_drift"], rows) if rows else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", help="clone into this folder and keep it")
    p.add_argument("--drift-lr", type=float, help="after the quick start, train again at this learning rate")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = p.parse_args(argv)
    load = warn_if_busy()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="peftpipe-quickstart-")) / "peftpipe"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout.strip()
    setup_rc, _, setup_s = run("bash scripts/setup.sh", folder)
    rc, out, run_s = run(".venv/bin/peftpipe run", folder)
    metrics = {f.stem: json.loads(f.read_text()) for f in (folder / "metrics").glob("*.json")}
    base, tuned = metrics.get("evaluate_base", {}), metrics.get("evaluate", {})
    gates = read_gates(folder)
    variants = metrics.get("export", {}).get("variants", {})
    result = {
        "env": {**env_block(os.cpu_count() or 1), "load_average_1m_at_start": round(load, 2)},
        "commit": commit, "command": "bash scripts/setup.sh && .venv/bin/peftpipe run",
        "setup": {"exit": setup_rc, "seconds": setup_s},
        # lines as a terminal shows them: newlines; a progress bar redraws itself with carriage returns
        "run": {"exit": rc, "seconds": run_s, "output_lines": out.count("\n"), "progress_redraws": out.count("\r"),
                "stages_run": re.findall(r"Running stage '([a-z_]+)'", out)},
        "metric_style": tuned.get("metric_style"), "samples": tuned.get("samples"),
        "base": {k: base.get(k) for k in METRICS}, "tuned": {k: tuned.get(k) for k in METRICS},
        "gates": [{"gate": g["gate"], "passed": g["passed"], "line": g["line"]} for g in gates.get("gates", [])],
        "gates_passed": gates.get("passed"),
        "variants": {v: {k: r.get(k) for k in ("samples", "rouge-l", "rouge-l_fp32", "rouge-l_delta", "passed",
                                                 "tokens_per_s", "tokens_per_s_fp32")} for v, r in variants.items()},
        "train": {k: metrics.get("train", {}).get(k) for k in ("steps", "precision", "wall_s", "tokens_per_s", "final_loss")},
        "ratios": {"tuned_vs_base_rouge_l_points": round((tuned.get("rouge-l") or 0) - (base.get("rouge-l") or 0), 2),
                   "tuned_vs_base_exact_match_points": round((tuned.get("exact_match") or 0) - (base.get("exact_match") or 0), 2)},
        "output_tail": out.replace("\r", "\n").split("\n")[-40:],
    }
    result["drift"] = {"default": tuned.get("drift"), "max_drift": gate_of(gates, "max_drift")}
    if args.drift_lr:
        d_rc, _, d_s = run(f".venv/bin/peftpipe run -S train.lr={args.drift_lr}", folder)
        d_gates = read_gates(folder)
        task = [g for g in d_gates.get("gates", []) if g["gate"] != "max_drift"]
        d_eval = json.loads((folder / "metrics" / "evaluate.json").read_text())
        result["drift"]["destructive"] = {
            "command": f".venv/bin/peftpipe run -S train.lr={args.drift_lr}", "exit": d_rc, "seconds": d_s,
            "lr": args.drift_lr, "drift": d_eval.get("drift"), "rouge-l": d_eval.get("rouge-l"),
            "task_gates_passed": all(g["passed"] for g in task), "max_drift": gate_of(d_gates, "max_drift")}
    out_dir = Path(args.out)
    write_json(out_dir / "quickstart.json", result)
    rows = [[k, base.get(k), tuned.get(k)] for k in METRICS]
    variant_rows = [[v, r.get("samples"), r.get("rouge-l_fp32"), r.get("rouge-l"), "yes" if r.get("passed") else "no"]
                    for v, r in variants.items()]
    md = (f"# Quick start on a fresh clone ({result['env']['cpu']}, {', '.join(result['env']['isa'])})\n\n"
          f"`{result['command']}` at {commit[:10]}: setup {setup_s:.0f} s, run {run_s:.0f} s (exit {rc}), "
          f"{result['run']['output_lines']} lines printed, metric style `{result['metric_style']}`, "
          f"{result['samples']} test questions.\n\n"
          + markdown_table(["metric", "base", "fine-tuned"], rows) + "\n"
          + markdown_table(["variant", "questions", "fp32 ROUGE-L", "variant ROUGE-L", "ships"], variant_rows) + "\n"
          + "\n".join(f"- {g['line']}" for g in result["gates"]) + "\n"
          + (f"\n## Drift gate\n\n{drift_table(result['drift'])}" if drift_table(result["drift"]) else ""))
    (out_dir / "quickstart.md").write_text(md)
    print(md)
    return 0 if rc == 0 and setup_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
