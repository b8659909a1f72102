"""Fine-tuning methods: one small module per method, found by name in this package.

A method module provides:
- `Config`: its params block (`train.<name>`), a `MethodConfig` subclass;
- `apply(model, config, ctx) -> model`, called after seeding;
- `ROUTE`, how the trained method ships (one of `ROUTES`):
  "merge" (an adapter folded into the weights), "kv_prefix" (a prompt-learning method shipped as a
  key/value prefix on the unchanged base), "weights" (it trains the model's own weights), "icl" (no
  training; its examples ship);
- `FAMILY` (for reports) and `SAVE` (how trained weights are stored: peft | model | selected | none);
- optionally `after_step(model, step)` (called after each optimiser step) and
  `extra_state`/`load_extra_state` (more state for checkpoints), or `save`/`load` for SAVE=selected.

The stages ask through the helpers below (`route`, `trains`, `mergeable`, `shipped_files`, `after_step`,
`save_extra_state`, `load_extra_state`), never through if/else on names or hasattr.

Adding a method: one module in components/methods/ (Config, apply, ROUTE, FAMILY, SAVE) plus its params
block train.<name> in params.yaml. `NAMES` (sorted) and `TrainConfig`'s blocks come from the modules here;
`base` and modules whose name starts with "_" are not methods.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

from components.core.layout import ICL_FILE, PREFIX_FILE
from components.core.plugins import Contract, discover, load
from components.methods.base import Context, MethodConfig  # noqa: F401

ROUTES = ("merge", "kv_prefix", "weights", "icl")
SAVES = ("peft", "model", "selected", "none")
NOT_METHODS = {"base"}

# what each route ships beside the model's weights (the merged folder and the bundle)
_SHIPPED = {"merge": (), "kv_prefix": (PREFIX_FILE,), "weights": (), "icl": (ICL_FILE,)}


CONTRACT = Contract(kind="method", package=__name__, required=("Config", "apply", "ROUTE", "FAMILY", "SAVE"),
                    choices=(("ROUTE", ROUTES), ("SAVE", SAVES)), not_plugins=frozenset(NOT_METHODS))
NAMES = discover(sys.modules[__name__], CONTRACT.not_plugins)


def get_method(name: str) -> ModuleType:
    """The method module for `name`, checked to declare what the stages ask of it."""
    return load(CONTRACT, NAMES, name, "train.method")


def _module(method: str | ModuleType) -> ModuleType:
    return get_method(method) if isinstance(method, str) else method


def route(method: str | ModuleType) -> str:
    """How the trained method ships: "merge", "kv_prefix", "weights" or "icl" (a method name or module)."""
    return _module(method).ROUTE


def trains(method: str | ModuleType) -> bool:
    """False for a method that changes nothing in the model (ICL): no training loop, no checkpoints."""
    return route(method) != "icl"


def mergeable(method: str | ModuleType) -> bool:
    """Whether the merge stage folds the method into the weights (`mergeable` in reports)."""
    return route(method) == "merge"


def shipped_files(method: str | ModuleType) -> tuple[str, ...]:
    """Files the route ships beside the weights: a KV prefix, the ICL examples, or none."""
    return _SHIPPED[route(method)]


def after_step(method: ModuleType, model, step: int) -> None:
    """The method's per-step hook (AdaLoRA's rank budget), after optimizer.step(); a no-op for most."""
    hook = getattr(method, "after_step", None)
    if hook is not None:
        hook(model, step)


def save_extra_state(method: ModuleType, model, file: str | Path) -> None:
    """Write the method's own checkpoint state (tensors) to file; nothing is written for methods without any."""
    state = getattr(method, "extra_state", None)
    if state is not None:
        from safetensors.torch import save_file

        save_file(state(model), str(file))


def load_extra_state(method: ModuleType, model, file: str | Path) -> None:
    """Restore what `save_extra_state` wrote; a no-op for methods without checkpoint state."""
    load = getattr(method, "load_extra_state", None)
    if load is not None:
        from safetensors.torch import load_file

        load(model, load_file(str(file)))
