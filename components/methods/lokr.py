"""LoKr (Yeh et al., 2023): the weight update as a Kronecker product with a low-rank factor."""

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
    from peft import LoKrConfig, get_peft_model

    config = LoKrConfig(task_type="CAUSAL_LM", r=c.r, alpha=c.alpha, rank_dropout=c.dropout,
                        target_modules=peft_targets(model, c.target_modules))
    return get_peft_model(model, config)
