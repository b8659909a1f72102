"""LoHa (Hyeon-Woo et al., 2022): the weight update as a Hadamard product of two low-rank products."""

from __future__ import annotations

from components.methods.base import Context, MethodConfig, peft_targets

FAMILY = "reparameterised"
MERGEABLE = True
SAVE = "peft"


class Config(MethodConfig):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


def apply(model, c: Config, ctx: Context):
    from peft import LoHaConfig, get_peft_model

    config = LoHaConfig(task_type="CAUSAL_LM", r=c.r, alpha=c.alpha, rank_dropout=c.dropout,
                        target_modules=peft_targets(model, c.target_modules))
    return get_peft_model(model, config)
