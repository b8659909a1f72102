"""The end-of-run summary: base vs fine-tuned metrics, gate verdicts, bundle, stage timings."""

from __future__ import annotations

import json
from pathlib import Path

from components.core.layout import REPORT_METRICS


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(root: str | Path = ".") -> dict:
    m = Path(root) / "metrics"
    data = {name: _read(m / f"{name}.json") for name in
            ("validate", "prepare", "train", "evaluate_base", "evaluate", "gate", "merge", "export")}
    try:  # the gate stage writes its report even when it fails (its metrics file only on success)
        from components.config.params import load_params

        report = _read(Path(root) / load_params(Path(root) / "params.yaml").paths.gate / "gates.json")
        data["gate"] = report or data["gate"]
    except Exception:
        pass
    return data


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
    lines += ["", "## Gates", ""]
    lines += [f"- {g['line']}" for g in (data.get("gate") or {}).get("gates", [])] or ["- not evaluated"]
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
    from rich.console import Console
    from rich.table import Table

    root = Path(root)
    data = collect(root)
    console = Console()
    t = Table(title="base vs fine-tuned (test split)")
    for col in ("metric", "base", "fine-tuned", "delta"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for row in metric_rows(data):
        t.add_row(*row)
    console.print(t)
    gates = (data.get("gate") or {}).get("gates", [])
    g = Table(title="gates")
    g.add_column("gate")
    g.add_column("value", justify="right")
    g.add_column("threshold", justify="right")
    g.add_column("verdict")
    for v in gates:
        verdict = v["line"].split(" ", 1)[0]
        color = {"PASS": "green", "FAIL": "red"}.get(verdict, "yellow")
        g.add_row(v["gate"], _fmt(v["value"]), _fmt(v["threshold"]), f"[{color}]{verdict}")
    if gates:
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
