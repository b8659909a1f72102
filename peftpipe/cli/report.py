"""peftpipe bench, peftpipe summary: benchmarks, and the last run's metrics and gate verdicts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftpipe.cli import _fail

BENCHMARKS = "methods, inference, serve_load, train_speed, eval_speed, step_profile, time_to_quality, recipes, budget_runs, quickstart"


def cmd_bench(args) -> int:
    """Run benchmarks/<name>.py from the project root, passing the remaining arguments through."""
    import subprocess

    script = Path("benchmarks") / f"{args.name}.py"
    if not script.exists():
        return _fail(f"{script}: no such benchmark here; run peftpipe bench from the project root", 2)
    return subprocess.run([sys.executable, str(script), *args.args]).returncode


def cmd_summary(args) -> int:
    from flows.report import markdown_report, print_summary

    if args.markdown:
        print(markdown_report("."), end="")
    else:
        print_summary(".")
    return 0


def register(sub) -> None:
    b = sub.add_parser("bench", help=f"run a benchmark from benchmarks/ ({BENCHMARKS}); --help after the name for its options")
    b.add_argument("name", help=f"benchmark name: {BENCHMARKS}")
    b.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    b.set_defaults(func=cmd_bench)

    sm = sub.add_parser("summary", help="print the last run's metrics and gate verdicts")
    sm.add_argument("--markdown", action="store_true", help="as Markdown (for CI job summaries)")
    sm.set_defaults(func=cmd_summary)
