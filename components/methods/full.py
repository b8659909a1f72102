"""Full fine-tuning: every weight trains (the reference for the other methods)."""

from __future__ import annotations

MERGEABLE = False  # nothing to merge: the trained weights are the model
ADAPTER = False


def apply(model, train_cfg):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
