"""peftpipe data generate, peftpipe data inspect: dataset utilities."""

from __future__ import annotations

from pathlib import Path

from peftpipe.cli.common import PARAMS, SET_HELP


def cmd_data_generate(args) -> int:
    from components.data.datagen import write_dataset

    n = write_dataset(args.out)
    print(f"wrote {n} rows to {args.out}")
    return 0


def cmd_data_inspect(args) -> int:
    from components.config.params import load_params
    from components.inspect.data import inspect_data, last_step_rate, print_inspection
    from components.model.base_model import load_tokenizer
    from components.prompts.templates import apply

    params = load_params(PARAMS, args.set or [])
    measured = last_step_rate(Path("metrics") / "train.json")  # the time estimate: this machine's last train run
    tokenizer = load_tokenizer(params.paths.base_model, params.model)
    apply(tokenizer, params.prepare.chat_template)  # rows rendered as prepare will render them
    print_inspection(inspect_data(args.file, params, tokenizer, args.out, measured))
    return 0


def register(sub) -> None:
    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dg = dsub.add_parser("generate", help="write the embedded QA dataset (deterministic)")
    dg.add_argument("--out", default="data/qa.jsonl")
    dg.set_defaults(func=cmd_data_generate)

    di = dsub.add_parser("inspect", help="format, counts, token lengths, truncation, duplicates, leakage, Data Docs")
    di.add_argument("file")
    di.add_argument("--out", default="artifacts/inspect", help="where inspect.json and the Data Docs HTML go")
    di.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; this run only")
    di.set_defaults(func=cmd_data_inspect)
