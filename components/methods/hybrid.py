"""Hybrid: LoRA (reparameterised) plus fully trained norm layers (selective), one PEFT adapter.

The norms train as PEFT `modules_to_save`; both parts fold into the weights on merge.
"""

from __future__ import annotations

from components.methods import lora
from components.methods.base import Context, peft_targets

FAMILY = "hybrid"
ROUTE = "merge"
SAVE = "peft"


class Config(lora.Config):
    train_modules: list[str] = ["input_layernorm", "post_attention_layernorm"]


def apply(model, c: Config, ctx: Context):
    from peft import get_peft_model

    return get_peft_model(model, lora.lora_config(model, c, modules_to_save=peft_targets(model, c.train_modules)))
