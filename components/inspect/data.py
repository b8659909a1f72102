"""`peftpipe data inspect`: what a data file holds, before any training is spent on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.data.prepare import encode_example, in_test_split
from components.data.validate import normalise_question, validate_file
from components.core.atomic import atomic_write_json
from components.config.params import Params


def histogram(values: list[int], bins: int = 8) -> list[dict]:
    if not values:
        return []
    counts, edges = np.histogram(values, bins=bins)
    return [{"from": int(edges[i]), "to": int(edges[i + 1]), "rows": int(c)} for i, c in enumerate(counts)]


def last_step_rate(train_metrics: str | Path) -> dict | None:
    """Seconds per computed token of the last train run on this machine (its metrics/train.json), or None."""
    try:
        m = json.loads(Path(train_metrics).read_text())
        computed = m["tokens_per_s"] * m["wall_s"] / (1 - m["padding_fraction"])
        return {"s_per_token": m["wall_s"] / computed, "from": str(train_metrics), "method": m["method"],
                "precision": m["precision"]}
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def training_plan(lengths: list[int], params: Params, measured: dict | None) -> dict:
    """The steps train would take on rows of these (cut) lengths, the epochs they make and, from a measured step
    rate, how long; under train.budget_minutes, the steps that fit it."""
    from components.training import budget
    from components.training.schedule import batch_schedule, planned_steps

    cfg = params.train
    if not lengths:
        return {"train_rows": 0, "steps": 0}
    steps = planned_steps(cfg, lengths, params.seed)
    sched = batch_schedule(lengths, cfg.batch_size, steps, params.seed, cfg.group_by_length, cfg.batch_tokens,
                           cfg.packing)
    costs = [budget.step_cost(lengths, b, cfg.packing) for b in sched]
    plan = {"train_rows": len(lengths), "steps": steps, "epochs": round(sum(map(len, sched)) / len(lengths), 3),
            "computed_tokens": sum(costs), "budget_minutes": cfg.budget_minutes, "estimate_s": None,
            "estimate_from": None}
    if measured:
        rate = measured["s_per_token"]
        if cfg.budget_minutes:  # the steps whose predicted time fits the budget, as the train stage plans them
            fit = budget.fit_steps(0, 0.0, 60 * cfg.budget_minutes, rate, costs, steps)
            plan.update(steps=fit, epochs=round(sum(map(len, sched[:fit])) / len(lengths), 3))
        plan["estimate_s"] = round(rate * sum(costs[: plan["steps"]]), 1)
        plan["estimate_from"] = f"{measured['from']} ({measured['method']}, {measured['precision']})"
    return plan


def inspect_data(path: str | Path, params: Params, tokenizer, out_dir: str | Path,
                 measured: dict | None = None) -> dict:
    """Detected format, row accounting, length histograms in the model's tokens, truncation rate at
    prepare.max_length, duplicates, leakage against data.test_path, the training plan (steps, epochs and, from
    `measured` (last_step_rate), the time), samples; Data Docs HTML in out_dir."""
    path, out_dir = Path(path), Path(out_dir)
    cfg = params.data.model_copy(update={"path": str(path)})
    test_keys: set[str] = set()
    report: dict = {"file": str(path)}
    if cfg.test_path:
        test_kept, test_q, test_in, _, test_out = validate_file(Path(cfg.test_path), cfg, params.validate_)
        test_keys = {normalise_question(r["question"]) for r in test_kept}
        report["test_file"] = {"path": cfg.test_path, "rows_in": test_in, "rows_kept": len(test_kept),
                               "rows_quarantined": len(test_q), "rows_left_out": sum(n["rows"] for n in test_out)}
    kept, quarantined, n_in, fmt, left_out = validate_file(path, cfg, params.validate_, test_keys,
                                                           docs_dir=out_dir / "data_docs")
    by_rule: dict[str, int] = {}
    for q in quarantined:
        by_rule[q["rule"]] = by_rule.get(q["rule"], 0) + 1
    lengths = [encode_example(tokenizer, r, params.prepare, cut=False)["full_length"] for r in kept]
    pc = params.prepare
    train_lengths = lengths if cfg.test_path else [  # the rows prepare's split keeps for training
        n for r, n in zip(kept, lengths) if not in_test_split(r["question"], pc.split_seed, pc.test_fraction)]
    max_len = params.prepare.resolve_max_length(train_lengths)  # as prepare resolves it: from the train rows
    report.update({
        "format": fmt, "rows_in": n_in, "rows_kept": len(kept), "rows_quarantined": len(quarantined),
        "rows_left_out": sum(n["rows"] for n in left_out), "left_out": [n["reason"] for n in left_out],
        "quarantined_by_rule": by_rule, "duplicates": by_rule.get("duplicates", 0), "leakage": by_rule.get("leakage", 0),
        "multi_turn_rows": sum(1 for r in kept if r.get("messages")),
        "tokens": {"mean": round(float(np.mean(lengths)), 1) if lengths else 0,
                   "p50": int(np.percentile(lengths, 50)) if lengths else 0,
                   "p95": int(np.percentile(lengths, 95)) if lengths else 0, "max": max(lengths, default=0),
                   "histogram": histogram(lengths)},
        "max_length": max_len, "max_length_setting": params.prepare.max_length,
        "plan": training_plan([min(n, max_len) for n in train_lengths], params, measured),
        "truncation_rate": round(sum(n > max_len for n in lengths) / len(lengths), 4) if lengths else 0.0,
        "question_chars": {"mean": round(float(np.mean([len(r["question"]) for r in kept])), 1) if kept else 0,
                           "histogram": histogram([len(r["question"]) for r in kept])},
        "answer_chars": {"mean": round(float(np.mean([len(r["answer"]) for r in kept])), 1) if kept else 0,
                         "histogram": histogram([len(r["answer"]) for r in kept])},
        "samples": [{"question": r["question"][:300], "answer": r["answer"][:300]} for r in kept[:3]],
        "first_quarantined": quarantined[:5],
        "data_docs": str(out_dir / "data_docs" / "index.html"),
    })
    atomic_write_json(out_dir / "inspect.json", report)
    return report


def print_inspection(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{report['file']} ({report['format']})")
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [("rows in", report["rows_in"]), ("rows kept", report["rows_kept"]),
            ("rows quarantined", report["rows_quarantined"]), ("duplicates", report["duplicates"]),
            ("leakage vs test file", report["leakage"]), ("multi-turn rows", report["multi_turn_rows"]),
            ("tokens mean / p50 / p95 / max",
             f"{report['tokens']['mean']} / {report['tokens']['p50']} / {report['tokens']['p95']} / {report['tokens']['max']}"),
            (f"truncated at {report['max_length']} tokens"
             + (" (auto: 99th percentile)" if report.get("max_length_setting") == "auto" else ""),
             f"{report['truncation_rate']:.1%}")]
    plan = report.get("plan") or {}
    if plan.get("train_rows"):
        rows += [("train rows", plan["train_rows"]),
                 ("train steps (epochs)", f"{plan['steps']} ({plan['epochs']:g})" + (
                     "" if not plan.get("budget_minutes") else f" within {plan['budget_minutes']:g} min"
                     if plan["estimate_s"] is not None else f" at most; {plan['budget_minutes']:g} min decide"))]
        rows.append(("estimated train time", f"{plan['estimate_s'] / 60:.1f} min (rate of {plan['estimate_from']})"
                     if plan["estimate_s"] is not None else "unknown: no train run measured here yet "
                     "(run `peftpipe stage train` once)"))
    for k, v in rows:
        t.add_row(k, str(v))
    for rule, n in sorted(report["quarantined_by_rule"].items()):
        t.add_row(f"  quarantined: {rule}", str(n))
    if report.get("rows_left_out"):
        t.add_row("rows left out (tool calls)", str(report["rows_left_out"]))
    console.print(t)
    for note in report.get("left_out", []):
        console.print(note, markup=False, highlight=False)
    h = Table(title="length in tokens (prompt + answer, chat template)")
    h.add_column("tokens")
    h.add_column("rows", justify="right")
    h.add_column("")
    top = max((b["rows"] for b in report["tokens"]["histogram"]), default=1) or 1
    for b in report["tokens"]["histogram"]:
        h.add_row(f"{b['from']}-{b['to']}", str(b["rows"]), "#" * round(30 * b["rows"] / top))
    console.print(h)
    s = Table(title="samples")
    s.add_column("question")
    s.add_column("answer")
    for x in report["samples"]:
        s.add_row(x["question"][:120], x["answer"][:120])
    console.print(s)
    console.print(f"Data Docs: {report['data_docs']}")
