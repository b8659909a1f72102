"""Fine-tuning methods: one small module per method, registered by name.

A method module provides `apply(model, train_cfg) -> model` (called after seeding) and
`MERGEABLE: bool`. Adding a method is adding a module and its config block.
"""

from __future__ import annotations

from importlib import import_module

METHODS = {"lora": "components.methods.lora", "full": "components.methods.full"}


def get_method(name: str):
    if name not in METHODS:
        raise ValueError(f"train.method: unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return import_module(METHODS[name])


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
