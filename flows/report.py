"""The end-of-run summary: base vs fine-tuned metrics, every verdict of the run (one table), bundle, stage timings.

The verdicts come from several files, since a stage cannot rewrite an earlier stage's DVC output: the gate
report (training health, metric gates), metrics/merge.json (merge parity), metrics/export.json (export parity,
the quantization check of each variant) and metrics/promotion.json (the last promotion check). A merge or export
that failed its check wrote its report beside its output instead (`<out>_report.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

from components.core.layout import REPORT_METRICS
from components.core.verdict import CHECKS, STOPS_THE_RUN, word

STAGE_REPORTS = ("merge", "export")  # the stages after the gate whose verdicts are in their own metrics files


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")


def collect(root: str | Path = ".") -> dict:
    m = Path(root) / "metrics"
    data = {name: _read(m / f"{name}.json") for name in
            ("validate", "prepare", "train", "evaluate_base", "evaluate", "gate", "merge", "export", "promotion")}
    try:  # the gate stage writes its report even when it fails (its metrics file only on success)
        from components.config.params import load_params

        params = load_params(Path(root) / "params.yaml")
        report = _read(Path(root) / params.paths.gate / "gates.json")
        data["gate"] = report or data["gate"]
        for stage, out in zip(STAGE_REPORTS, (params.paths.merged, params.paths.bundle)):
            failed = Path(root) / (str(out) + "_report.json")  # a failed check's report, when newer than the metrics
            if _mtime(failed) > _mtime(m / f"{stage}.json"):
                data[f"{stage}_failed"] = _read(failed)
    except Exception:
        pass
    return data


def _row(v: dict) -> dict:
    """A verdict in the common shape (a gate report written before `check` and `reason` existed is read too)."""
    check = v.get("check") or ("training_health" if v.get("gate") == "training_health" else "metric")
    reason = v.get("reason") or v.get("line", "").split(": ", 1)[-1]
    return {**v, "check": check, "reason": reason, "enforced": v.get("enforced") or CHECKS[check], "verdict": word(v)}


def verdicts(data: dict) -> list[dict]:
    """Every verdict of the last run in pipeline order (gate, merge, export), then the last promotion check's.
    A stage's verdicts are left out when an earlier check stopped the run (they would be an older run's)."""
    out = [_row(v) for v in (data.get("gate") or {}).get("gates", [])]
    stopped = any(not v["passed"] for v in out)
    for stage in STAGE_REPORTS:
        if stopped:
            break
        rows = [_row(v) for v in (data.get(f"{stage}_failed") or data.get(stage) or {}).get("verdicts", [])]
        out += rows
        stopped = any(not v["passed"] and v["enforced"] == STOPS_THE_RUN for v in rows)
    return out + [_row(v) for v in (data.get("promotion") or {}).get("verdicts", [])]


def promotion_line(data: dict) -> str | None:
    p = data.get("promotion")
    if not p:
        return None
    return (f"promotion check: {p['name']} {p['version']} to {p['stage']} "
            f"({'allowed' if p['passed'] else 'refused'}; {p.get('checked', '')})")


def metric_rows(data: dict) -> list[tuple[str, str, str, str]]:
    base, tuned = data.get("evaluate_base") or {}, data.get("evaluate") or {}
    rows = []
    for k in REPORT_METRICS:
        b, t = base.get(k), tuned.get(k)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        delta = "-" if b is None or t is None else f"{t - b:+.2f}"
        rows.append((k.upper().replace("_", " "), fmt(b), fmt(t), delta))
    return rows


def bundle_line(root: Path, data: dict) -> str:
    from components.config.params import load_params

    bundle = root / load_params(root / "params.yaml").paths.bundle
    return str(bundle) if data.get("export") and bundle.exists() else "not written"


def markdown_report(root: str | Path, stages: list[dict] | None = None) -> str:
    root = Path(root)
    data = collect(root)
    lines = ["# peftpipe run", "", "| metric | base | fine-tuned | delta |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in metric_rows(data)]
    rows = verdicts(data)
    lines += ["", "## Verdicts", ""]
    if rows:
        lines += ["| check | gate | verdict | value | threshold | reason |", "|---|---|---|---|---|---|"]
        lines += [f"| {v['check']} | {v['gate']} | {v['verdict']} | {_fmt(v['value'])} | {_fmt(v['threshold'])} | "
                  f"{v['reason'].replace('|', chr(92) + '|')} |" for v in rows]
        lines += ["", *[f"- {v['line']}" for v in rows]]
        lines += [f"- {promotion_line(data)}"] if promotion_line(data) else []
    else:
        lines += ["- not evaluated"]
    from components.evaluation.diagnosis import diagnosis_markdown

    lines += ["", *diagnosis_markdown((data.get("gate") or {}).get("diagnosis"))]
    lines += [f"Bundle: `{bundle_line(root, data)}`"]
    if stages:
        lines += ["", "| stage | ran | seconds |", "|---|---|---|"]
        lines += [f"| {s['stage']} | {'yes' if s['ran'] else 'cached'} | {s['seconds']} |" for s in stages]
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        return "..".join(_fmt(i) for i in x)
    return str(x)


def print_summary(root: str | Path = ".", stages: list[dict] | None = None, total_s: float | None = None) -> None:
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    root = Path(root)
    data = collect(root)
    console = Console(width=None if sys.stdout.isatty() else 200)  # piped (CI logs): the reasons on one line
    t = Table(title="base vs fine-tuned (test split)")
    for col in ("metric", "base", "fine-tuned", "delta"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for row in metric_rows(data):
        t.add_row(*row)
    console.print(t)
    rows = verdicts(data)
    g = Table(title="verdicts", caption=promotion_line(data))
    for col in ("check", "gate", "verdict", "value", "threshold", "reason"):
        g.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for v in rows:
        color = {"PASS": "green", "FAIL": "red"}.get(v["verdict"], "yellow")
        g.add_row(v["check"], escape(v["gate"]), f"[{color}]{v['verdict']}", escape(_fmt(v["value"])),
                  escape(_fmt(v["threshold"])), escape(v["reason"]))
    if rows:
        console.print(g)
    diagnosis = (data.get("gate") or {}).get("diagnosis")
    if diagnosis:
        lr, em = diagnosis["length_ratio"], diagnosis["exact_match"]
        console.print(f"length ratio {lr['base']:.2f} -> {lr['tuned']:.2f}, exact match {em['base']:.1f} -> "
                      f"{em['tuned']:.1f}; diagnosis: {diagnosis['line']}")
    if stages:
        s = Table(title="stages")
        s.add_column("stage")
        s.add_column("ran")
        s.add_column("seconds", justify="right")
        for st in stages:
            s.add_row(st["stage"], "yes" if st["ran"] else "cached", f"{st['seconds']:.1f}")
        console.print(s)
    console.print(f"bundle: {bundle_line(root, data)}")
    if total_s is not None:
        console.print(f"total: {total_s:.0f} s")


def print_registry(rows: list[dict], name: str) -> None:
    """The registry's versions as a table: stages, commit, method, data and bundle hashes, metrics."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"registry: {name}")
    for col in ("version", "stages", "commit", "method", "data md5", "params", "bundle md5", "ROUGE-L", "BLEU-4", "created"):
        table.add_column(col)
    for r in rows:
        lin = r["lineage"]
        m = lin.get("metrics", {})
        table.add_row(r["version"], ", ".join(r["stages"]) or "-", r["commit"][:8], str(lin.get("method")),
                      str(lin.get("data", {}).get("md5"))[:10], str(lin.get("params_sha256"))[:10],
                      str(lin.get("bundle", {}).get("md5"))[:10], f"{m.get('rouge-l', float('nan')):.2f}",
                      f"{m.get('bleu-4', float('nan')):.2f}", str(lin.get("created")))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


SWEEP_METRICS = ("rouge-l", "exact_match", "token_f1", "bleu-4")  # the sweep table's columns


def print_sweep(rows: list[dict], sort: str) -> None:
    """The sweep's runs as a table, best first."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep, best {sort} first")
    cols = ["experiment", "params", *dict.fromkeys([sort, *SWEEP_METRICS]), "seconds"]
    for c in cols:
        table.add_column(c)
    fmt = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in rows:
        table.add_row(r["name"] or "failed", " ".join(r["overrides"]), *[fmt(r.get(m)) for m in dict.fromkeys([sort, *SWEEP_METRICS])],
                      fmt(r["seconds"]))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
