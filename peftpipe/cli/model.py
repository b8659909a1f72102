"""peftpipe model inspect: what the pipeline will do with the configured model."""

from __future__ import annotations

from peftpipe.cli.common import PARAMS, SET_HELP


def cmd_model_inspect(args) -> int:
    from components.config.params import load_params
    from components.inspect.model import inspect_model, print_model_inspection

    params = load_params(PARAMS, args.set or [])
    print_model_inspection(inspect_model(params, args.out))
    return 0


def register(sub) -> None:
    m = sub.add_parser("model", help="model utilities")
    msub = m.add_subparsers(dest="model_command", required=True)
    mi = msub.add_parser("inspect", help="architecture, vocabulary, chat template and why, BOS/EOS/end of turn, stop "
                                         "ids, a rendered training row with its label mask, what each stage will do")
    mi.add_argument("--out", default="artifacts/inspect", help="where model_inspect.json goes")
    mi.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; this run only")
    mi.set_defaults(func=cmd_model_inspect)
