"""Selective tuning: train a chosen subset of the model's own weights, freeze the rest.

BitFit (Ben Zaken et al., 2022) trains biases only; Llama-style models have none, so norms and
the last N layers are selectable too, as are any parameters whose name matches a regex.
Only the selected tensors are saved (`selected.safetensors`); loading puts them onto the base.
"""

from __future__ import annotations

import re

from pydantic import Field

from components.methods.base import Context, MethodConfig

FAMILY = "selective"
ROUTE = "weights"  # nothing to merge: the trained tensors replace the base's
SAVE = "selected"
FILE = "selected.safetensors"


class Config(MethodConfig):
    lr: float | None = 1e-4
    biases: bool = True
    norms: bool = True
    last_layers: int = Field(2, ge=0, description="train every weight of the last N transformer layers")
    patterns: list[str] = Field(default_factory=list, description="regexes on parameter names to train too")


def selected(name: str, c: Config, n_layers: int) -> bool:
    if c.biases and name.endswith(".bias"):
        return True
    if c.norms and re.search(r"norm[^.]*\.weight$", name):
        return True
    m = re.search(r"\.layers\.(\d+)\.", name)
    if c.last_layers and m and int(m.group(1)) >= n_layers - c.last_layers:
        return True
    return any(re.search(p, name) for p in c.patterns)


def apply(model, c: Config, ctx: Context):
    n_layers = model.config.num_hidden_layers
    chosen = 0
    for name, p in model.named_parameters():
        p.requires_grad_(selected(name, c, n_layers))
        chosen += p.requires_grad
    if not chosen:
        raise ValueError("train.selective selects no parameter (this model has no biases?): "
                         "set norms, last_layers or patterns")
    return model


def save(model, folder) -> None:
    from safetensors.torch import save_file

    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}, folder / FILE)


def load(model, folder):
    """Put the saved tensors onto the base model (names and shapes must match)."""
    import torch
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    tensors = load_file(folder / FILE)
    unknown = [n for n in tensors if n not in params or params[n].shape != tensors[n].shape]
    if unknown:
        raise ValueError(f"{folder / FILE}: tensors {unknown[:3]} do not fit the base model")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)
    return model
