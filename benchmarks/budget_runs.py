"""`peftpipe run` on real QA sets under a training-time budget, as a user runs it: nothing changed but the data.

    python benchmarks/budget_runs.py dolly gsm8k cmrc            # train.budget_minutes=20 each (about 30 min a set)
    python benchmarks/budget_runs.py dolly --minutes 5
    python benchmarks/budget_runs.py dolly --set train.neftune_alpha=5    # an experiment: its own row

Each set gets a fresh clone of this checkout's HEAD under --workdir with the set's file copied into its data/
folder (the clone is scratch: nothing is copied into the repository), then
`peftpipe run -S data.path=data/<file> -S train.budget_minutes=<minutes>` (cmrc adds `-S evaluate.language=zh`)
with this interpreter's environment. The default gates are sized for the embedded data and usually fail on
these sets; that is recorded, not an error. Reported per set: rows, the steps and epochs the budget bought, the
training wall time against the budget, whether the learning-rate schedule completed, base and fine-tuned
ROUGE-L / BLEU-4 / exact match, the ROUGE-L gain with its paired bootstrap 95% interval (the gain gate's),
drift, and each gate's verdict. A set whose result was made from the same commit, data and minutes is kept, so
the sets can run over several sittings. Writes docs/benchmarks/budget_runs.{json,md}. Run it alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import DATASETS, ROOT, env_block, made_from, markdown_table, read_json, warn_if_busy, write_json

SETS = {
    "dolly": (DATASETS / "dolly_open_qa" / "open_qa.jsonl", "dolly_open_qa.jsonl", []),
    "gsm8k": (DATASETS / "gsm8k" / "train.jsonl", "gsm8k_train.jsonl", []),
    "cmrc": (DATASETS / "cmrc2018" / "dev.json", "cmrc2018_dev.json", ["evaluate.language=zh"]),
}
METRICS = ("rouge-l", "bleu-4", "exact_match", "token_f1")


def commit_of(root: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def same_pipeline(a: str, b: str) -> bool:
    """Two commits that differ at most in benchmarks/, docs/ and tests/ run the same pipeline."""
    return subprocess.run(["git", "diff", "--quiet", a, b, "--", ".", ":!benchmarks", ":!docs", ":!tests"],
                          cwd=ROOT).returncode == 0


def set_key(commit: str, name: str, minutes: float, sets: tuple[str, ...] = ()) -> str:
    src = SETS[name][0]
    ident = {"commit": commit, "set": name, "minutes": minutes, **made_from(src)}  # made_from: the machine too
    if sets:
        ident["overrides"] = list(sets)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


BUCKETS = ((0, 5), (5, 15), (15, 40), (40, None))  # reference length in words


def by_reference_length(folder: Path) -> list[dict] | None:
    """Base and fine-tuned ROUGE-L and answer words (medians) per reference-length bucket, from the run's
    predictions: where the gain is made and where it is lost. None when either predictions file is missing."""
    import statistics

    files = [folder / "artifacts" / d / "predictions.jsonl" for d in ("eval_base", "eval")]
    if not all(f.exists() for f in files):
        return None
    base, tuned = ({r["id"]: r for r in map(json.loads, f.read_text().splitlines()) if r} for f in files)
    out = []
    for lo, hi in BUCKETS:
        ids = [i for i in base if i in tuned and lo <= len(base[i]["reference"].split()) < (hi or 10**9)]
        if ids:
            out.append({"reference_words": f"{lo}-{hi - 1}" if hi else f"{lo}+", "questions": len(ids),
                        **{f"{k}_rouge-l": round(statistics.mean(d[i]["scores"]["rouge-l"] for i in ids), 2)
                           for k, d in (("base", base), ("tuned", tuned))},
                        **{f"{k}_answer_words_median": statistics.median(len(d[i]["prediction"].split()) for i in ids)
                           for k, d in (("base", base), ("tuned", tuned))}})
    return out


def folder_name(name: str, sets: tuple[str, ...]) -> str:
    """The set's scratch clone under --workdir (an experiment's own, so the defaults' clone stays)."""
    return name + ("-" + hashlib.sha256(" ".join(sets).encode()).hexdigest()[:8] if sets else "")


def row_name(name: str, sets: tuple[str, ...]) -> str:
    """A set's row in the report: its name, plus the overrides of a --set experiment (the defaults' row stays)."""
    return f"{name} + {' '.join(sets)}" if sets else name


def run_set(name: str, minutes: float, commit: str, folder: Path, resume: bool = False,
            sets: tuple[str, ...] = ()) -> dict:
    """A fresh clone at `commit`, the set's file in data/, one `peftpipe run`; what it measured. With resume, an
    interrupted run's clone (whose commit differs at most in benchmarks/, docs/ and tests/) runs `peftpipe run` again (DVC skips the stages it finished)."""
    src, fname, extra = SETS[name]
    resumed = resume and (folder / ".git").exists() and same_pipeline(commit_of(folder), commit)
    if not resumed:
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
        subprocess.run(["git", "checkout", "-q", "--detach", commit], cwd=folder, check=True)
        shutil.copy(src, folder / "data" / fname)
    overrides = [f"data.path=data/{fname}", f"train.budget_minutes={minutes:g}", *extra, *sets]
    command = "peftpipe run " + " ".join(f"-S {o}" for o in overrides)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(folder)}
    t0 = time.perf_counter()
    proc = subprocess.run([str(bindir / "peftpipe"), "run", *[x for o in overrides for x in ("-S", o)]], cwd=folder,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = round(time.perf_counter() - t0, 1)
    out = proc.stdout.decode("utf-8", "replace")
    (folder / "run.log").write_text(out)
    m = {f.stem: json.loads(f.read_text()) for f in (folder / "metrics").glob("*.json")}
    gates_file = folder / "artifacts" / "gate" / "gates.json"
    report = json.loads(gates_file.read_text()) if gates_file.exists() else {}
    gates = report.get("gates", [])
    tr, base, tuned = m.get("train", {}), m.get("evaluate_base", {}), m.get("evaluate", {})
    budget = tr.get("budget") or {}
    gain = next((g.get("interval") for g in gates if g["gate"] == "gain_rouge-l"), None)
    return {
        "command": command, "exit": proc.returncode, "run_wall_s": wall, "resumed": resumed,  # resumed: this call's wall only
        "stages_run": re.findall(r"Running stage '([a-z_]+)'", out),
        "rows": {"in": m.get("validate", {}).get("rows_in"), "quarantined": m.get("validate", {}).get("rows_quarantined"),
                 "train": tr.get("train_rows"), "test_scored": tuned.get("samples")},
        "max_length": m.get("prepare", {}).get("max_length"),
        "train": {"steps": tr.get("steps"), "steps_done": tr.get("steps_done"), "planned_steps": budget.get("steps"), "epochs": tr.get("epochs"),
                  "rows_per_step": tr.get("rows_per_step"), "wall_s": tr.get("wall_s"), "budget_s": round(minutes * 60, 1),
                  "plans": budget.get("plans"), "precision": tr.get("precision"), "lr": tr.get("lr"),
                  "schedule_completed": bool(budget) and tr.get("steps_done", tr.get("steps")) == budget.get("steps"),
                  "health": tr.get("health")},
        "base": {k: base.get(k) for k in METRICS}, "tuned": {k: tuned.get(k) for k in METRICS},
        "length_ratio": {"base": base.get("length_ratio"), "tuned": tuned.get("length_ratio")},
        "by_reference_length": by_reference_length(folder),
        "rouge-l_gain": gain, "drift": (tuned.get("drift") or {}).get("drift"),
        "diagnosis": (report.get("diagnosis") or {}).get("line"),
        "gates": [{"gate": g["gate"], "passed": g["passed"], "line": g["line"]} for g in gates],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", choices=list(SETS))
    p.add_argument("--minutes", type=float, default=20.0, help="train.budget_minutes of every run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="an experiment: this params override too (repeatable); reported as its own row, beside the "
                        "defaults' row")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: fill what the kept runs' clones still hold (by reference length) and write the report")
    p.add_argument("--resume", action="store_true", help="continue an interrupted set's clone (same pipeline code)")
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "budget_runs"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = p.parse_args(argv)
    commit = commit_of(ROOT)
    out_dir = Path(args.out)
    old = read_json(out_dir / "budget_runs.json") or {}
    results = dict(old.get("sets", {}))
    sets = tuple(args.overrides)
    for name in args.sets:
        key, row = set_key(commit, name, args.minutes, sets), row_name(name, sets)
        if args.report_only or results.get(row, {}).get("key") == key:
            folder = Path(args.workdir) / folder_name(name, sets)
            if row in results and results[row].get("by_reference_length") is None and folder.exists():
                results[row]["by_reference_length"] = by_reference_length(folder)
            if args.report_only:
                continue
            print(f"[{row}] kept (same commit, data, minutes and overrides)", flush=True)
            continue
        load = warn_if_busy()
        print(f"[{row}] peftpipe run, {args.minutes:g}-minute budget ...", flush=True)
        folder = Path(args.workdir) / folder_name(name, sets)
        r = run_set(name, args.minutes, commit, folder, args.resume, sets)
        results[row] = {"key": key, "commit": commit, "minutes": args.minutes, "load_average_1m_at_start": round(load, 2),
                         "env": env_block(os.cpu_count() or 1), **r}
        write_json(out_dir / "budget_runs.json", {"benchmark": "budget_runs", "sets": results,
                                                  "ratios": ratios(results)})
        print(f"[{row}] exit {r['exit']}, {r['run_wall_s']:.0f} s", flush=True)
    write_json(out_dir / "budget_runs.json", {"benchmark": "budget_runs", "sets": results, "ratios": ratios(results)})
    md = report(results)
    (out_dir / "budget_runs.md").write_text(md)
    print(md)
    return 0


def ratios(results: dict) -> dict:
    """Training wall time over the budget, and fine-tuned over base ROUGE-L, per set."""
    out = {}
    for name, r in results.items():
        tr, b, t = r["train"], r["base"].get("rouge-l"), r["tuned"].get("rouge-l")
        out[name] = {"train_wall_over_budget": round(tr["wall_s"] / tr["budget_s"], 3) if tr.get("wall_s") else None,
                     "tuned_over_base_rouge-l": round(t / b, 3) if b and t is not None else None}
    return out


def report(results: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    rows = []
    for name, r in results.items():
        tr, g = r["train"], r.get("rouge-l_gain") or {}
        rows.append([name, r["rows"]["train"], r["rows"]["test_scored"], tr.get("steps_done") or tr["steps"], tr["epochs"],
                     f"{(tr['wall_s'] or 0) / 60:.1f} / {tr['budget_s'] / 60:g}", "yes" if tr["schedule_completed"] else "no",
                     f"{fmt(r['base']['rouge-l'])} -> {fmt(r['tuned']['rouge-l'])}",
                     f"{fmt(r['base']['bleu-4'])} -> {fmt(r['tuned']['bleu-4'])}",
                     f"{fmt(r['base']['exact_match'])} -> {fmt(r['tuned']['exact_match'])}",
                     f"{g['mean']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]" if g else "-",
                     "-" if r["drift"] is None else f"{r['drift']:+.3f}", r["exit"]])
    first = next(iter(results.values()))
    env = first["env"]
    lines = ["# Budget runs: `peftpipe run` on real QA sets, nothing changed but the data and the budget", "", "A row named `set + KEY=VALUE` is an experiment with that override too (`--set`).", "",
             f"CPU: {env.get('cpu')}, flags {', '.join(env.get('isa') or [])}; commit(s) "
             f"{', '.join(sorted({r['commit'][:10] for r in results.values()}))}. Command per set: see budget_runs.json "
             "(`command`). Exit 1 is the default gates (sized for the embedded data) refusing the model.", "",
             markdown_table(["set", "train rows", "test questions", "steps trained", "epochs", "train min / budget",
                             "schedule completed", "ROUGE-L base -> tuned", "BLEU-4", "exact match",
                             "ROUGE-L gain [95% CI]", "drift", "exit"], rows)]
    for name, r in results.items():
        failed = [g["gate"] for g in r["gates"] if not g["passed"]]
        lines.append(f"- {name}: gates failed: {', '.join(failed) or 'none'}" +
                     (f"; {r['diagnosis']}" if isinstance(r.get("diagnosis"), str) else ""))
    for name, r in results.items():
        if r.get("by_reference_length"):
            lines += ["", f"{name}: where the gain is made, by the reference's length (mean ROUGE-L, median answer words)", "",
                      markdown_table(["reference words", "questions", "ROUGE-L base -> tuned", "answer words base -> tuned"],
                                     [[b["reference_words"], b["questions"], f"{b['base_rouge-l']:.2f} -> {b['tuned_rouge-l']:.2f}",
                                       f"{b['base_answer_words_median']:g} -> {b['tuned_answer_words_median']:g}"]
                                      for b in r["by_reference_length"]])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
