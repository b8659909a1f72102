"""peftpipe command line: run the pipeline, run one stage, generate from a bundle, make data."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from components.core.errors import UserError
from components.core.runtime import quiet_env

# The modules of peftpipe.cli whose register(subparsers) adds a group of subcommands, in the order the subcommands
# appear in --help. Each imports its heavy dependencies inside its handlers, so building the parser stays fast.
COMMAND_MODULES = ("run", "serve", "registry", "sweep", "data", "model", "report")


def _fail(msg: str, code: int = 1) -> int:
    """The one-line error every failure prints (no traceback); returns the exit code."""
    print(f"peftpipe: error: {msg}", file=sys.stderr)
    return code


def _is_user_error(e: Exception) -> bool:
    return isinstance(e, (UserError, FileNotFoundError))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftpipe", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
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
