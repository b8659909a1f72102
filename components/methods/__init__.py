"""Fine-tuning methods: one small module per method, registered by name.

A method module provides:
- `Config`: its params block (`train.<name>`), a `MethodConfig` subclass;
- `apply(model, config, ctx) -> model`, called after seeding;
- `FAMILY`, `MERGEABLE` and `SAVE` (how trained weights are stored: peft | model | selected | none);
- optionally `after_step(model, step)` (called after each optimiser step) and
  `extra_state`/`load_extra_state` (more state for checkpoints), or `save`/`load` for SAVE=selected.

Adding a method is adding a module, its line here and its config field in `components/core/config.py`.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

from components.methods.base import Context, MethodConfig  # noqa: F401

NAMES = ("full", "lora", "dora", "rslora", "adalora", "ia3", "loha", "lokr", "prefix", "ptuning_v2", "ptuning",
         "prompt", "selective", "hybrid", "icl")


def get_method(name: str):
    if name not in NAMES:
        raise ValueError(f"train.method: unknown method {name!r}; choose from {', '.join(NAMES)}")
    return import_module(f"components.methods.{name}")
