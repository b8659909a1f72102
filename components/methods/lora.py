"""LoRA (Hu et al., 2021): low-rank updates W + (alpha/r) B A on chosen linear layers, through PEFT."""

from __future__ import annotations

from components.methods.base import Context, MethodConfig, peft_targets

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(MethodConfig):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


def lora_config(model, c: Config, **extra):
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                      target_modules=peft_targets(model, c.target_modules), **extra)


def apply(model, c: Config, ctx: Context):
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, c))
