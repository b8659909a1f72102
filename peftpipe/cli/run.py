"""peftpipe run, peftpipe stage: the whole pipeline, or one of its stages."""

from __future__ import annotations

from peftpipe.cli.common import PARAMS, SET_HELP, outside_project_root


def cmd_run(args) -> int:
    if (code := outside_project_root()) is not None:
        return code
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


def register(sub) -> None:
    from components.methods import NAMES as METHOD_NAMES
    from components.stages import STAGES

    r = sub.add_parser("run", help="run the whole pipeline (Prefect flow over the dvc.yaml stages)")
    r.add_argument("--method", help="fine-tuning method (sets train.method): " + ", ".join(METHOD_NAMES))
    r.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; written to params.yaml")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("stage", help="run one stage (what dvc.yaml calls)")
    s.add_argument("name", choices=list(STAGES))
    s.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; this run only")
    s.set_defaults(func=cmd_stage)
