"""peftpipe sweep: a grid of params as DVC experiments, ranked by a metric."""

from __future__ import annotations

from pathlib import Path

from peftpipe.cli.common import outside_project_root


def cmd_sweep(args) -> int:
    from flows.run import run_lock
    from flows.report import print_sweep
    from flows.sweep import sweep

    if (code := outside_project_root()) is not None:
        return code
    with run_lock():
        rows = sweep(args.set, args.until, args.sort, args.apply_best)
    print_sweep(rows, args.sort)
    if args.out:  # the table as a record: what ran, on what, and what each point scored
        from components.core.atomic import atomic_write_json
        from flows.sweep import environment

        atomic_write_json(Path(args.out), {"command": "peftpipe sweep " + " ".join(f"-S '{s}'" for s in args.set)
                                           + f" --until {args.until} --sort {args.sort}", "env": environment(),
                                           "sort": args.sort, "runs": rows})
        print(f"wrote {args.out}")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


def register(sub) -> None:
    sw = sub.add_parser("sweep", help="run a grid of params as DVC experiments, one at a time, and rank them")
    sw.add_argument("-S", "--set", action="append", required=True, metavar="KEY=V1,V2,...",
                    help="one axis of the grid, e.g. -S train.lr=1e-4,3e-4,1e-3 -S train.method=lora,ptuning_v2")
    sw.add_argument("--until", default="evaluate", help="the last stage each experiment runs (default: evaluate; "
                                                        "export for the whole pipeline)")
    sw.add_argument("--sort", default="rouge-l", help="the metric that ranks the runs (metrics/evaluate.json)")
    sw.add_argument("--apply-best", action="store_true", help="apply the best experiment to the workspace (dvc exp apply)")
    sw.add_argument("--out", help="also write the ranked runs as JSON to this file")
    sw.set_defaults(func=cmd_sweep)
