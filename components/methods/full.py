"""Full fine-tuning: every weight trains (the reference for the other methods)."""

from __future__ import annotations

from components.methods.base import Context, MethodConfig

FAMILY = "full"
ROUTE = "weights"  # nothing to merge: the trained weights are the model
SAVE = "model"


class Config(MethodConfig):
    lr: float | None = 5e-5


def apply(model, c: Config, ctx: Context):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
