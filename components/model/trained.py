"""Trained-weights I/O: what a method trained goes into a folder with `method.json`; loading gives
the model for inference whatever the method."""

from __future__ import annotations

import json
from pathlib import Path

from components.core.layout import METHOD_FILE
from components.methods import get_method, mergeable
from components.model.base_model import load_base


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
                                                  "mergeable": mergeable(method)}, indent=1))


def load_trained(base_dir: str | Path, train_dir: str | Path):
    """The fine-tuned model for inference, whatever the method: (model, tokenizer, method name)."""
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
