"""What the subcommand modules share: the params file, help texts, and the project-root checks."""

from __future__ import annotations

from pathlib import Path

from peftpipe.cli import _fail

PARAMS = Path("params.yaml")
SET_HELP = "override a param, e.g. -S train.lr=1e-4 (same syntax as dvc exp run -S)"
VARIANT_HELP = "which ONNX model: auto (a quantized one when the bundle ships it, i.e. it passed its quality gate), fp32, int8, int4"
VARIANTS = ["auto", "fp32", "int8", "int4"]
NOT_PROJECT_ROOT = "no dvc.yaml here: run peftpipe from the project root"


def outside_project_root(*, raise_error: bool = False) -> int | None:
    """None in the project root (the directory with dvc.yaml). Elsewhere: print the one-line error and return exit
    code 2, or with raise_error raise FileNotFoundError (main prints it and exits 1; --debug shows the traceback)."""
    if Path("dvc.yaml").exists():
        return None
    if raise_error:
        raise FileNotFoundError(NOT_PROJECT_ROOT)
    return _fail(NOT_PROJECT_ROOT, 2)


def missing_bundle(bundle: str) -> int | None:
    """None when the bundle directory exists; else the one-line error and exit code 2."""
    return None if Path(bundle).is_dir() else _fail(f"{bundle}: no such bundle directory", 2)


def registry_ctx():
    """The params for a registry command, run from the project root."""
    from components.config.params import check_confined, load_params

    outside_project_root(raise_error=True)
    params = load_params(PARAMS)
    check_confined(params)  # registry.deploy_dir too
    return params
