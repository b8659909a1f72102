"""The GPU path checked against the CPU on the embedded model: run on a machine with CUDA (scripts/device_check.sh).

    python benchmarks/device_check.py               # LoRA, 20 steps, embedded data, cuda and cpu
    python benchmarks/device_check.py --steps 40 --devices cuda cpu

For each device: the train stage's LoRA for --steps steps (precision auto: bf16 on CUDA, as measured on
the CPU), the evaluate stage on --samples test questions, and merge with its parity check. Then the loss
curves are compared step by step (CUDA bf16 against CPU: within bf16 noise, --curve-rtol) and the tuned
metrics side by side. Writes docs/benchmarks/device_check.{json,md}; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common import ROOT, env_block, markdown_table, write_json
from methods import prepare_once


def curve(path: Path) -> list[float]:
    return [float(x.split("\t")[1]) for x in path.read_text().splitlines()[1:]]


def main(argv=None) -> int:
    import torch

    from components.config.params import Paths, load_params
    from components.deploy.merge import run_merge
    from components.evaluation.evaluate import run_evaluate
    from components.training.train import run_train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    ap.add_argument("--curve-rtol", type=float, default=0.05, help="relative gap allowed between the curves")
    ap.add_argument("--workdir", default=str(ROOT / ".bench" / "device_check"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    base = [f"paths.{k}={work / v}" for k, v in Paths().model_dump().items()]
    shared = load_params(ROOT / "params.yaml", base)
    prepare_once(shared)
    runs = {}
    for device in args.devices:
        d = work / device
        p = load_params(ROOT / "params.yaml", base + [f"train.device={device}", f"train.steps={args.steps}",
                                                      f"evaluate.max_samples={args.samples}",
                                                      f"paths.train={d / 'train'}", f"paths.eval={d / 'eval'}",
                                                      f"paths.merged={d / 'merged'}"])
        t0 = time.perf_counter()
        tr = run_train(p, p.paths.base_model, p.paths.prepared, p.paths.train, str(d / "ckpt"))
        train_s = time.perf_counter() - t0
        ev = run_evaluate(p, "tuned", p.paths.base_model, p.paths.prepared, p.paths.train, p.paths.eval)
        mg = run_merge(p, p.paths.base_model, p.paths.prepared, p.paths.train, p.paths.merged)
        runs[device] = {"train": tr, "train_s": round(train_s, 2), "evaluate": {k: ev[k] for k in ("rouge-l", "exact_match", "eval_loss")},
                        "eval_tokens_per_s": ev["generation"]["tokens_per_s"], "merge_passed": bool(mg["passed"]),
                        "curve": curve(Path(str(p.paths.train) + "_curve.tsv")),
                        "device_name": torch.cuda.get_device_name() if device == "cuda" else env_block(os.cpu_count() or 1)["cpu"]}
    checks = {f"{d}_merge_parity": r["merge_passed"] for d, r in runs.items()}
    ratios = {}
    if len(runs) == 2:
        (a, ra), (b, rb) = runs.items()
        gaps = [abs(x - y) / max(abs(y), 1e-8) for x, y in zip(ra["curve"], rb["curve"])]
        checks["curves_agree"] = max(gaps) <= args.curve_rtol
        ratios = {f"{a}_vs_{b}_train_speed": round(rb["train_s"] / ra["train_s"], 2),
                  f"{a}_vs_{b}_max_curve_gap": round(max(gaps), 4)}
    result = {"env": {**env_block(os.cpu_count() or 1), "cuda": torch.version.cuda,
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "args": vars(args), "runs": runs, "checks": checks, "passed": all(checks.values()), "ratios": ratios}
    out = Path(args.out)
    write_json(out / "device_check.json", result)
    rows = [[d, r["train"]["precision"], r["train_s"], r["train"]["tokens_per_s"], r["evaluate"]["rouge-l"],
             r["evaluate"]["exact_match"], "yes" if r["merge_passed"] else "no"] for d, r in runs.items()]
    md = ("# Device check\n\n" + markdown_table(["device", "precision", "train s", "tokens/s", "ROUGE-L", "exact match",
                                                 "merge parity"], rows)
          + "\n" + "\n".join(f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in checks.items()) + "\n")
    (out / "device_check.md").write_text(md)
    print(md)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
