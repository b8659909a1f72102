"""Quality gates: thresholds from params.yaml, each with a verdict (components/core/verdict.py's shape).

Gates: training health; metric floors; gains over the base model with paired bootstrap 95%
intervals; no regression against the promoted model; degeneration of the generated answers.
A failure writes the report, withdraws any stale merged model and bundle, then raises GateFailed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from components.core.errors import UserError
from components.core.verdict import verdict

from components.evaluation.diagnosis import diagnose, diagnosis_markdown
from components.evaluation.evaluate import read_predictions
from components.evaluation.regression import paired, paired_regression
from components.core.atomic import atomic_write_json, atomic_write_text
from components.config.params import GatesConfig

PROMOTED_PREDICTIONS = "eval_predictions.jsonl"  # what a bundle keeps for later no-regression checks


class GateFailed(UserError, RuntimeError):
    pass


def _verdict(name: str, passed: bool, value: float | None, threshold, text: str, **extra) -> dict:
    """A metric gate's verdict."""
    return verdict("metric", name, passed, value, threshold, text, **extra)


def health_verdict(health: dict) -> dict:
    """The training-health verdict from what the train stage recorded ({ok} or {ok, reason, step, value, best_step})."""
    ok = health.get("ok", True)
    text = "training finished with finite, stable loss" if ok else (
        f"{health['reason']} at step {health['step']} (loss {health['value']:.4g}); kept the best step {health.get('best_step')}")
    return verdict("training_health", "training_health", ok, health.get("value"), "finite, no spike", text)


def check_gates(tuned: dict, base: dict, cfg: GatesConfig, health: dict | None = None,
                tuned_rows: dict | None = None, base_rows: dict | None = None, promoted_rows: dict | None = None) -> list[dict]:
    """Every gate's verdict. Rows are per-sample predictions keyed by question id (for the paired intervals)."""
    v = []
    if health is not None:
        v.append(health_verdict(health))
    n = int(tuned.get("samples", len(tuned_rows or {})))
    v.append(_verdict("min_samples", n >= cfg.min_samples, n, cfg.min_samples,
                      f"{n} scored test questions (needs >= {cfg.min_samples}; fewer prove nothing)"))
    for metric, floor in cfg.min_scores.items():
        value = tuned[metric]
        v.append(_verdict(f"min_{metric}", value >= floor, round(value, 4), floor, f"{metric} = {value:.2f} (needs >= {floor:g})"))
    for metric, need in cfg.min_gain.items():
        gain = tuned[metric] - base[metric]
        ci = paired(tuned_rows, base_rows, metric, cfg.bootstrap_samples) if tuned_rows and base_rows else None
        ok = gain >= need
        text = f"{metric} gain over base = {gain:+.2f} (needs >= {need:g})"
        if ci:
            text += f", 95% CI [{ci['low']:+.2f}, {ci['high']:+.2f}] on {ci['n']} questions"
            if cfg.require_significant_gain:
                ok = ok and ci["low"] > 0 and ci["n"] >= 2
                text += " (must exclude 0)"
        v.append(_verdict(f"gain_{metric}", ok, round(gain, 4), need, text, interval=ci))
    v += no_regression(tuned_rows or {}, promoted_rows, cfg)
    v.append(_verdict("empty_rate", tuned["empty_rate"] <= cfg.max_empty_rate, tuned["empty_rate"], cfg.max_empty_rate,
                      f"empty answers = {tuned['empty_rate']:.1%} (needs <= {cfg.max_empty_rate:.0%})"))
    v.append(_verdict("repeated_ngrams", tuned["repeated_ngram_rate"] <= cfg.max_repeated_ngram_rate,
                      tuned["repeated_ngram_rate"], cfg.max_repeated_ngram_rate,
                      f"repeated 3-gram rate = {tuned['repeated_ngram_rate']:.3f} (needs <= {cfg.max_repeated_ngram_rate:g})"))
    lr = tuned["length_ratio"]
    v.append(_verdict("length_ratio", cfg.min_length_ratio <= lr <= cfg.max_length_ratio, lr,
                      [cfg.min_length_ratio, cfg.max_length_ratio],
                      f"answer/reference length = {lr:.2f} (needs {cfg.min_length_ratio:g}..{cfg.max_length_ratio:g})"))
    if cfg.max_drift is not None:
        v.append(drift_gate(tuned.get("drift"), cfg.max_drift))
    return v


def drift_gate(d: dict | None, limit: float) -> dict:
    """The fine-tuned model's loss on the base model's answers to general prompts, over the base model's own."""
    if not d:
        return _verdict("max_drift", True, None, limit, "drift not measured (evaluate.drift_max_new_tokens is 0, or no "
                        "base answers to the drift prompts)", skipped=True)
    if d.get("drift") is None:  # the base model's drift answers were degenerate: no reference to drift from
        return _verdict("max_drift", True, None, limit, f"drift not measured: {d.get('skipped', 'no reference')}",
                        skipped=True)
    return _verdict("max_drift", d["drift"] <= limit, d["drift"], limit,
                    f"drift on {d['prompts']} general prompts = {d['drift']:+.3f} nats/token (loss on the base model's "
                    f"answers {d['tuned_loss']:.3f} vs its own {d['base_loss']:.3f}; needs <= {limit:g}); "
                    f"{d['first_sentence_match']:.0%} of answers keep the base model's first sentence")


def no_regression(tuned_rows: dict, promoted_rows: dict | None, cfg: GatesConfig) -> list[dict]:
    """One verdict per REGRESSION_METRICS: the tuned model against the promoted one on the questions both answered."""
    if not promoted_rows:
        return [_verdict("no_regression", True, None, -cfg.max_regression, "no promoted model to compare with", skipped=True)]
    out = []
    for metric, r in paired_regression(tuned_rows, promoted_rows, cfg.max_regression, cfg.bootstrap_samples).items():
        if r is None:
            out.append(_verdict(f"no_regression_{metric}", True, None, -cfg.max_regression,
                                "the promoted model was scored on other questions: no shared question to compare",
                                skipped=True))
            continue
        ci = r["interval"]
        out.append(_verdict(f"no_regression_{metric}", r["passed"], ci["mean"], -cfg.max_regression,
                            f"{metric} vs promoted = {ci['mean']:+.2f} (needs >= {-cfg.max_regression:g}), "
                            f"95% CI [{ci['low']:+.2f}, {ci['high']:+.2f}] on the {ci['n']} questions both answered",
                            interval=ci))
    return out


def gates_markdown(report: dict) -> str:
    lines = ["# Gate report", "", f"**{'PASSED' if report['passed'] else 'FAILED'}**", "",
             "| gate | verdict | value | threshold |", "|---|---|---|---|"]
    for g in report["gates"]:
        verdict = g["line"].split(" ", 1)[0]
        value = "-" if g["value"] is None else f"{g['value']:.4g}" if isinstance(g["value"], float) else str(g["value"])
        lines.append(f"| {g['gate']} | {verdict} | {value} | {g['threshold']} |")
    lines += ["", *[f"- {g['line']}" for g in report["gates"]], "", *diagnosis_markdown(report.get("diagnosis"))]
    return "\n".join(lines) + "\n"


def run_gate(eval_base_dir: str | Path, eval_dir: str | Path, train_dir: str | Path, cfg: GatesConfig,
             out_dir: str | Path, withdraw: tuple[str | Path, ...] = ()) -> dict:
    """Write gates.json and gates.md; on failure remove `withdraw` paths (stale merged model, bundle) and raise."""
    base = json.loads((Path(eval_base_dir) / "metrics.json").read_text())
    tuned = json.loads((Path(eval_dir) / "metrics.json").read_text())
    train_metrics = Path(train_dir) / "metrics.json"
    health = json.loads(train_metrics.read_text()).get("health") if train_metrics.exists() else None
    promoted_rows = None
    if cfg.promoted:
        f = Path(cfg.promoted) / PROMOTED_PREDICTIONS
        if not f.exists():
            raise GateFailed(f"gates.promoted: {f} not found (is {cfg.promoted} a peftpipe bundle?)")
        promoted_rows = read_predictions(f.parent, f.name)
    tuned_rows, base_rows = read_predictions(eval_dir), read_predictions(eval_base_dir)
    verdicts = check_gates(tuned, base, cfg, health, tuned_rows, base_rows, promoted_rows)
    report = {"passed": all(v["passed"] for v in verdicts), "gates": verdicts,
              "diagnosis": diagnose(base_rows, tuned_rows, tuned.get("language", "en"))}
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "gates.json", report)
    atomic_write_text(out_dir / "gates.md", gates_markdown(report))
    for v in verdicts:
        print(v["line"])
    print(f"diagnosis: {report['diagnosis']['line']}")
    if not report["passed"]:
        for path in map(Path, withdraw):
            shutil.rmtree(path, ignore_errors=True)
        failed = "; ".join(v["line"][5:] for v in verdicts if not v["passed"])
        raise GateFailed(f"quality gate failed: {failed}. Nothing is merged or exported.")
    return report

