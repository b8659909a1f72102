"""rsLoRA (Kalajdzievski, 2023): LoRA scaled by alpha/sqrt(r) instead of alpha/r, stable at higher ranks."""

from __future__ import annotations

from components.methods import lora
from components.methods.base import Context

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(lora.Config):
    r: int = 16
    alpha: int = 16


def apply(model, c: Config, ctx: Context):
    from peft import get_peft_model

    return get_peft_model(model, lora.lora_config(model, c, use_rslora=True))
