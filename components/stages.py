"""The stage entry points that `peftpipe stage NAME` (and so dvc.yaml) runs.

Each reads the typed params, calls plain functions in `components/`, and writes its metrics to
`metrics/<name>.json`. The graph itself (deps, outs, order) is defined once, in dvc.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from components.core.atomic import atomic_write_json
from components.config.params import Params

METRICS_DIR = Path("metrics")


def base_model(p: Params) -> dict:
    """Materialise the base model, then refuse (one line) what this family cannot do with these params."""
    from transformers import AutoConfig

    from components.model.base_model import materialise
    from components.model.capabilities import check_supported

    info = materialise(p.model, p.paths.base_model)
    info["notes"] = check_supported(AutoConfig.from_pretrained(p.paths.base_model), p)
    return info


def validate(p: Params) -> dict:
    from components.data.validate import run_validate

    return run_validate(p.data, p.validate_, p.paths.validated)


def prepare(p: Params) -> dict:
    from components.data.prepare import run_prepare

    return run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared,
                       mask_history=p.data.mask_history)


def train(p: Params) -> dict:
    from components.training.train import run_train

    return run_train(p, p.paths.base_model, p.paths.prepared, p.paths.train, p.paths.train + "_checkpoints")


def evaluate_base(p: Params) -> dict:
    from components.evaluation.evaluate import run_evaluate

    return run_evaluate(p, "base", p.paths.base_model, p.paths.prepared, None, p.paths.eval_base)


def evaluate(p: Params) -> dict:
    from components.evaluation.evaluate import run_evaluate

    return run_evaluate(p, "tuned", p.paths.base_model, p.paths.prepared, p.paths.train, p.paths.eval, p.paths.eval_base)


def gate(p: Params) -> dict:
    from components.evaluation.gates import run_gate

    return run_gate(p.paths.eval_base, p.paths.eval, p.paths.train, p.gates, p.paths.gate,
                    withdraw=(p.paths.merged, p.paths.bundle))


def merge(p: Params) -> dict:
    from components.deploy.merge import run_merge

    return run_merge(p, p.paths.base_model, p.paths.prepared, p.paths.train, p.paths.merged)


def export(p: Params) -> dict:
    from components.deploy.export import run_export

    return run_export(p, p.paths.merged, p.paths.prepared, p.paths.eval_base, p.paths.eval, p.paths.gate, p.paths.bundle)


STAGES: dict[str, Callable[[Params], dict]] = {
    f.__name__: f for f in (base_model, validate, prepare, train, evaluate_base, evaluate, gate, merge, export)
}


def run_stage(name: str, params: Params) -> dict:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    from components.training.distributed import is_main_process

    result = STAGES[name](params)
    if is_main_process():  # in a data-parallel train group, rank 0 alone writes
        atomic_write_json(METRICS_DIR / f"{name}.json", result)
    return result
