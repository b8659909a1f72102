"""DoRA (Liu et al., 2024): LoRA on the direction of each weight plus a learned magnitude vector."""

from __future__ import annotations

from components.methods import lora
from components.methods.base import Context

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(lora.Config):
    pass


def apply(model, c: Config, ctx: Context):
    from peft import get_peft_model

    return get_peft_model(model, lora.lora_config(model, c, use_dora=True))
