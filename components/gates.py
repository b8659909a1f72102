"""Quality gates: thresholds from params.yaml, each with a verdict line."""

from __future__ import annotations

import json
from pathlib import Path

from peftpipe.atomic import atomic_write_json
from peftpipe.config import GatesConfig


class GateFailed(RuntimeError):
    pass


def check_gates(tuned: dict, base: dict, cfg: GatesConfig) -> list[dict]:
    checks = [
        ("min_rouge_l", "ROUGE-L of the fine-tuned model", tuned["rouge-l"], cfg.min_rouge_l),
        ("min_rouge_l_gain", "ROUGE-L gain over the base model", tuned["rouge-l"] - base["rouge-l"], cfg.min_rouge_l_gain),
    ]
    verdicts = []
    for name, what, value, threshold in checks:
        ok = value >= threshold
        verdicts.append({"gate": name, "value": round(value, 4), "threshold": threshold, "passed": ok,
                         "line": f"{'PASS' if ok else 'FAIL'} {name}: {what} = {value:.2f} (needs >= {threshold:g})"})
    return verdicts


def run_gate(eval_base_dir: str | Path, eval_dir: str | Path, cfg: GatesConfig, out_dir: str | Path) -> dict:
    """Write gates.json; raise GateFailed (after writing) when any gate fails."""
    base = json.loads((Path(eval_base_dir) / "metrics.json").read_text())
    tuned = json.loads((Path(eval_dir) / "metrics.json").read_text())
    verdicts = check_gates(tuned, base, cfg)
    report = {"passed": all(v["passed"] for v in verdicts), "gates": verdicts}
    atomic_write_json(Path(out_dir) / "gates.json", report)
    for v in verdicts:
        print(v["line"])
    if not report["passed"]:
        failed = ", ".join(v["gate"] for v in verdicts if not v["passed"])
        raise GateFailed(f"quality gate failed ({failed}): the model is not merged or exported")
    return report
