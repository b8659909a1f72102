"""peftpipe command line: run the pipeline, run one stage, generate from a bundle, make data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from components.core.errors import UserError
from components.core.runtime import quiet_env

PARAMS = Path("params.yaml")
VARIANT_HELP = "which ONNX model: auto (a quantized one when the bundle ships it, i.e. it passed its quality gate), fp32, int8, int4"


def _fail(msg: str, code: int = 1) -> int:
    print(f"peftpipe: error: {msg}", file=sys.stderr)
    return code


def cmd_run(args) -> int:
    if not Path("dvc.yaml").exists():
        return _fail("no dvc.yaml here: run peftpipe from the project root", 2)
    from flows.run import run_lock

    with run_lock():
        return _run_locked(args)


def _run_locked(args) -> int:
    overrides = list(args.set or [])
    if args.method:
        overrides.append(f"train.method={args.method}")
    from flows.run import run_pipeline_locked

    return run_pipeline_locked(overrides)


def cmd_stage(args) -> int:
    from components.config.params import check_confined, load_params
    from components.stages import run_stage

    params = load_params(PARAMS, args.set or [])
    check_confined(params)
    from components.training.distributed import relaunch_stage

    if (code := relaunch_stage(args, params)) is not None:  # train.processes > 1: re-run under accelerate launch
        return code
    from components.core.runtime import LOG_DIR, log_to_file

    log_to_file(LOG_DIR / f"{args.name}.log")  # library INFO chatter to a file, not the terminal
    run_stage(args.name, params)
    return 0


def cmd_data_generate(args) -> int:
    from components.data.datagen import write_dataset

    n = write_dataset(args.out)
    print(f"wrote {n} rows to {args.out}")
    return 0


def cmd_data_inspect(args) -> int:
    from components.config.params import load_params
    from components.inspect.data import inspect_data, last_step_rate, print_inspection
    from components.model.base_model import load_tokenizer

    params = load_params(PARAMS, args.set or [])
    measured = last_step_rate(Path("metrics") / "train.json")  # the time estimate: this machine's last train run
    print_inspection(inspect_data(args.file, params, load_tokenizer(params.paths.base_model, params.model), args.out,
                                  measured))
    return 0


def cmd_generate(args) -> int:
    from components.bundle.loader import Bundle

    if not Path(args.bundle).is_dir():
        return _fail(f"{args.bundle}: no such bundle directory", 2)
    bundle = Bundle(args.bundle, variant=args.variant)
    for q in args.question:
        if len(args.question) > 1:
            print(f"Q: {q}\nA: ", end="", flush=True)
        if args.no_stream:
            print(bundle.answer(q, args.max_new_tokens))
            continue
        for piece in bundle.stream(q, args.max_new_tokens):
            print(piece, end="", flush=True)
        print()
    return 0


def cmd_serve(args) -> int:
    from components.serving.serve import ServeLimits, serve

    release = None
    if args.bundle is None:  # whatever the registry has in the stage (production by default)
        from flows.releasing import deployed_bundle

        args.bundle, release = deployed_bundle(Path("."), _registry_ctx(), args.stage)
    if not Path(args.bundle).is_dir():
        return _fail(f"{args.bundle}: no such bundle directory", 2)
    token = os.environ.get(args.token_env) or None
    if args.require_token and not token:
        return _fail(f"--require-token: set the token in the environment variable {args.token_env}", 2)
    limits = ServeLimits(max_prompt_chars=args.max_prompt_chars, max_prompt_tokens=args.max_prompt_tokens,
                         max_new_tokens=args.max_new_tokens_limit, parallel=args.parallel)
    serve(args.bundle, args.host, args.port, limits, token, args.threads, args.variant, release, args.follow,
          args.model_id)
    return 0


def _registry_ctx():
    from components.config.params import check_confined, load_params

    if not Path("dvc.yaml").exists():
        raise FileNotFoundError("no dvc.yaml here: run peftpipe from the project root")
    params = load_params(PARAMS)
    check_confined(params)  # registry.deploy_dir too
    return params


def cmd_register(args) -> int:
    from components.release import registry

    params = _registry_ctx()
    registry.register(Path("."), params, params.registry.name, push=params.registry.push)
    return 0


def cmd_promote(args) -> int:
    from flows.releasing import promote_version

    promote_version(Path("."), _registry_ctx(), args.version, args.to)
    return 0


def cmd_rollback(args) -> int:
    from components.release import registry

    params = _registry_ctx()
    registry.rollback(Path("."), params.registry.name, args.stage, params.registry.deploy_dir, push=params.registry.push)
    return 0


def cmd_registry(args) -> int:
    import json

    from components.release import registry
    from flows.report import print_registry

    params = _registry_ctx()
    rows = registry.versions(Path("."), params.registry.name)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print_registry(rows, params.registry.name)
    return 0


def cmd_release(args) -> int:
    from flows.releasing import release

    if not Path("dvc.yaml").exists():
        return _fail("no dvc.yaml here: run peftpipe from the project root", 2)
    result = release(Path("."), list(args.set or []), None if args.to == "none" else args.to)
    return 0 if result["passed"] else 1


def cmd_watch(args) -> int:
    from flows.releasing import watch

    if not Path("dvc.yaml").exists():
        return _fail("no dvc.yaml here: run peftpipe from the project root", 2)
    on_change = None
    if args.emit_event:  # a Prefect deployment trigger (infra/prefect/prefect.yaml) runs the release instead
        from flows.releasing import emit_data_changed

        on_change = lambda: emit_data_changed(Path("."))  # noqa: E731
    results = watch(Path("."), args.interval, args.debounce, args.max_runs, None if args.to == "none" else args.to,
                    list(args.set or []), on_change)
    return 0 if results and all(r.get("passed") for r in results) else 1


def cmd_sweep(args) -> int:
    from flows.run import run_lock
    from flows.report import print_sweep
    from flows.sweep import sweep

    if not Path("dvc.yaml").exists():
        return _fail("no dvc.yaml here: run peftpipe from the project root", 2)
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


def parser() -> argparse.ArgumentParser:
    from components.methods import NAMES as METHOD_NAMES
    from components.stages import STAGES

    p = argparse.ArgumentParser(prog="peftpipe", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    set_help = "override a param, e.g. -S train.lr=1e-4 (same syntax as dvc exp run -S)"

    r = sub.add_parser("run", help="run the whole pipeline (Prefect flow over the dvc.yaml stages)")
    r.add_argument("--method", help="fine-tuning method (sets train.method): " + ", ".join(METHOD_NAMES))
    r.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=set_help + "; written to params.yaml")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("stage", help="run one stage (what dvc.yaml calls)")
    s.add_argument("name", choices=list(STAGES))
    s.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=set_help + "; this run only")
    s.set_defaults(func=cmd_stage)

    g = sub.add_parser("generate", help="answer questions with ONNX Runtime from an exported bundle")
    g.add_argument("--bundle", required=True, help="bundle directory written by the export stage")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--no-stream", action="store_true", help="print each answer when complete")
    g.add_argument("--variant", default="auto", choices=["auto", "fp32", "int8", "int4"], help=VARIANT_HELP)
    g.add_argument("question", nargs="+")
    g.set_defaults(func=cmd_generate)

    sv = sub.add_parser("serve", help="HTTP service over a bundle: POST /generate, GET /health, GET /metadata, "
                                       "and the OpenAI API (/v1/models, /v1/chat/completions, /v1/completions)")
    sv.add_argument("--bundle", help="bundle directory written by the export stage (default: the registry's --stage version)")
    sv.add_argument("--stage", default="production", choices=["production", "staging"],
                    help="without --bundle: serve the version the registry has in this stage")
    sv.add_argument("--follow", type=float, default=10.0, metavar="SECONDS",
                    help="without --bundle: check the registry this often and switch to a newly promoted or "
                         "rolled-back version (0: never)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token-env", default="PEFTPIPE_SERVE_TOKEN",
                    help="environment variable holding the bearer token (when set, requests must send it)")
    sv.add_argument("--require-token", action="store_true", help="refuse to start without a token")
    sv.add_argument("--max-new-tokens-limit", type=int, default=256, help="the most new tokens a request may ask for")
    sv.add_argument("--max-prompt-chars", type=int, default=4000)
    sv.add_argument("--max-prompt-tokens", type=int, default=1024)
    sv.add_argument("--parallel", type=int, default=2, help="requests decoding at once; the rest queue")
    sv.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per decode (0: its default)")
    sv.add_argument("--variant", default="auto", choices=["auto", "fp32", "int8", "int4"], help=VARIANT_HELP)
    sv.add_argument("--model-id", help="the model name the OpenAI API (/v1) reports and accepts "
                                       "(default: the registry name, else peftpipe-<method>)")
    sv.set_defaults(func=cmd_serve)

    rg = sub.add_parser("register", help="register the last run's bundle in the model registry (gates must have passed)")
    rg.set_defaults(func=cmd_register)

    pr = sub.add_parser("promote", help="assign a registered version to staging or production (gated, no regression)")
    pr.add_argument("--to", required=True, choices=["staging", "production"])
    pr.add_argument("--version", help="vX.Y.Z; default: the latest version (to staging) or the one in staging (to production)")
    pr.set_defaults(func=cmd_promote)

    rb = sub.add_parser("rollback", help="withdraw the version in a stage; the one before it is back in effect")
    rb.add_argument("--stage", default="production", choices=["production", "staging"])
    rb.set_defaults(func=cmd_rollback)

    rl = sub.add_parser("registry", help="list registered versions with their stages and lineage")
    rl.add_argument("--json", action="store_true", help="print every version's full lineage as JSON")
    rl.set_defaults(func=cmd_registry)

    re_ = sub.add_parser("release", help="run the pipeline, register the bundle if its gates pass, promote it")
    re_.add_argument("--to", default="staging", choices=["staging", "production", "none"])
    re_.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=set_help + "; written to params.yaml")
    re_.set_defaults(func=cmd_release)

    w = sub.add_parser("watch", help="rerun the pipeline when the tracked data changes (debounced), then release it")
    w.add_argument("--interval", type=float, default=5.0, help="seconds between polls of the data files")
    w.add_argument("--debounce", type=float, default=10.0, help="seconds the data must stay unchanged before a run")
    w.add_argument("--max-runs", type=int, default=0, help="stop after this many runs (0: keep watching)")
    w.add_argument("--to", default="staging", choices=["staging", "production", "none"], help="promote passing runs to")
    w.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=set_help + "; written to params.yaml")
    w.add_argument("--emit-event", action="store_true",
                   help="send a Prefect event (peftpipe.data.changed) for a deployment trigger instead of running here")
    w.set_defaults(func=cmd_watch)

    sw = sub.add_parser("sweep", help="run a grid of params as DVC experiments, one at a time, and rank them")
    sw.add_argument("-S", "--set", action="append", required=True, metavar="KEY=V1,V2,...",
                    help="one axis of the grid, e.g. -S train.lr=1e-4,3e-4,1e-3 -S train.method=lora,ptuning_v2")
    sw.add_argument("--until", default="evaluate", help="the last stage each experiment runs (default: evaluate; "
                                                        "export for the whole pipeline)")
    sw.add_argument("--sort", default="rouge-l", help="the metric that ranks the runs (metrics/evaluate.json)")
    sw.add_argument("--apply-best", action="store_true", help="apply the best experiment to the workspace (dvc exp apply)")
    sw.add_argument("--out", help="also write the ranked runs as JSON to this file")
    sw.set_defaults(func=cmd_sweep)

    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dg = dsub.add_parser("generate", help="write the embedded QA dataset (deterministic)")
    dg.add_argument("--out", default="data/qa.jsonl")
    dg.set_defaults(func=cmd_data_generate)

    di = dsub.add_parser("inspect", help="format, counts, token lengths, truncation, duplicates, leakage, Data Docs")
    di.add_argument("file")
    di.add_argument("--out", default="artifacts/inspect", help="where inspect.json and the Data Docs HTML go")
    di.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=set_help + "; this run only")
    di.set_defaults(func=cmd_data_inspect)

    b = sub.add_parser("bench", help="run a benchmark from benchmarks/ (methods, inference, serve_load, train_speed, eval_speed, step_profile, time_to_quality, recipes, budget_runs, quickstart); --help after the name for its options")
    b.add_argument("name", help="benchmark name: methods, inference, serve_load, train_speed, eval_speed, step_profile, time_to_quality, recipes, budget_runs, quickstart")
    b.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    b.set_defaults(func=cmd_bench)

    sm = sub.add_parser("summary", help="print the last run's metrics and gate verdicts")
    sm.add_argument("--markdown", action="store_true", help="as Markdown (for CI job summaries)")
    sm.set_defaults(func=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_env()
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # one clear line, no traceback, unless --debug
        if args.debug or os.environ.get("PEFTPIPE_DEBUG"):
            raise
        return _fail(f"{type(e).__name__}: {e}" if not _is_user_error(e) else str(e))


def _is_user_error(e: Exception) -> bool:
    return isinstance(e, (UserError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
