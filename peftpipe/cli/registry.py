"""peftpipe register/promote/rollback/registry/release/watch: the model registry, and releasing into it."""

from __future__ import annotations

from pathlib import Path

from peftpipe.cli.common import SET_HELP, outside_project_root, registry_ctx


def cmd_register(args) -> int:
    from components.release import registry

    params = registry_ctx()
    registry.register(Path("."), params, params.registry.name, push=params.registry.push)
    return 0


def cmd_promote(args) -> int:
    from flows.releasing import promote_version

    promote_version(Path("."), registry_ctx(), args.version, args.to)
    return 0


def cmd_rollback(args) -> int:
    from components.release import registry

    params = registry_ctx()
    registry.rollback(Path("."), params.registry.name, args.stage, params.registry.deploy_dir, push=params.registry.push)
    return 0


def cmd_registry(args) -> int:
    import json

    from components.release import registry
    from flows.report import print_registry

    params = registry_ctx()
    rows = registry.versions(Path("."), params.registry.name)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print_registry(rows, params.registry.name)
    return 0


def cmd_release(args) -> int:
    from flows.releasing import release

    if (code := outside_project_root()) is not None:
        return code
    result = release(Path("."), list(args.set or []), None if args.to == "none" else args.to)
    return 0 if result["passed"] else 1


def cmd_watch(args) -> int:
    from flows.releasing import watch

    if (code := outside_project_root()) is not None:
        return code
    on_change = None
    if args.emit_event:  # a Prefect deployment trigger (infra/prefect/prefect.yaml) runs the release instead
        from flows.releasing import emit_data_changed

        on_change = lambda: emit_data_changed(Path("."))  # noqa: E731
    results = watch(Path("."), args.interval, args.debounce, args.max_runs, None if args.to == "none" else args.to,
                    list(args.set or []), on_change)
    return 0 if results and all(r.get("passed") for r in results) else 1


def register(sub) -> None:
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
    re_.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; written to params.yaml")
    re_.set_defaults(func=cmd_release)

    w = sub.add_parser("watch", help="rerun the pipeline when the tracked data changes (debounced), then release it")
    w.add_argument("--interval", type=float, default=5.0, help="seconds between polls of the data files")
    w.add_argument("--debounce", type=float, default=10.0, help="seconds the data must stay unchanged before a run")
    w.add_argument("--max-runs", type=int, default=0, help="stop after this many runs (0: keep watching)")
    w.add_argument("--to", default="staging", choices=["staging", "production", "none"], help="promote passing runs to")
    w.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; written to params.yaml")
    w.add_argument("--emit-event", action="store_true",
                   help="send a Prefect event (peftpipe.data.changed) for a deployment trigger instead of running here")
    w.set_defaults(func=cmd_watch)
