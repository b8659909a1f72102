"""Fine-tuning methods: one small module per method, registered by name.

A method module provides:
- `Config`: its params block (`train.<name>`), a `MethodConfig` subclass;
- `apply(model, config, ctx) -> model`, called after seeding;
- `FAMILY`, `MERGEABLE` and `SAVE` (how trained weights are stored: peft | model | selected | none);
- optionally `after_step(model, step)` (called after each optimiser step) and
  `extra_state`/`load_extra_state` (more state for checkpoints), or `save`/`load` for SAVE=selected.

Adding a method is adding a module, its line here and its config field in `peftpipe/config.py`.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path

from components.methods.base import Context, MethodConfig  # noqa: F401

NAMES = ("full", "lora", "dora", "rslora", "adalora", "ia3", "loha", "lokr", "prefix", "ptuning_v2", "ptuning",
         "prompt", "selective", "hybrid", "icl")
METHOD_FILE = "method.json"


def get_method(name: str):
    if name not in NAMES:
        raise ValueError(f"train.method: unknown method {name!r}; choose from {', '.join(NAMES)}")
    return import_module(f"components.methods.{name}")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_trained(name: str, model, tokenizer, folder: Path) -> None:
    """Write what the method trained into folder, with method.json saying how to load it."""
    method = get_method(name)
    if method.SAVE == "peft":
        model.save_pretrained(folder / "adapter", safe_serialization=True)
    elif method.SAVE == "model":
        model.save_pretrained(folder / "model", safe_serialization=True)
        tokenizer.save_pretrained(folder / "model")
    elif method.SAVE == "selected":
        method.save(model, folder)
    (folder / METHOD_FILE).write_text(json.dumps({"method": name, "family": method.FAMILY, "save": method.SAVE,
                                                  "mergeable": method.MERGEABLE}, indent=1))


def load_trained(base_dir: str | Path, train_dir: str | Path):
    """The fine-tuned model for inference, whatever the method: (model, tokenizer, method name)."""
    from components.base_model import load_base

    train_dir = Path(train_dir)
    info = json.loads((train_dir / METHOD_FILE).read_text())
    method = get_method(info["method"])
    if method.SAVE == "model":
        model, tokenizer = load_base(train_dir / "model")
    else:
        model, tokenizer = load_base(base_dir)
        if method.SAVE == "peft":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, train_dir / "adapter")
        elif method.SAVE == "selected":
            model = method.load(model, train_dir)
    model.eval()
    return model, tokenizer, info["method"]
