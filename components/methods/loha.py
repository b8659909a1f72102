"""LoHa (Hyeon-Woo et al., 2022): the weight update as a Hadamard product of two low-rank products."""

from __future__ import annotations

from components.methods import lora
from components.methods.base import Context, peft_targets

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(lora.Config):
    dropout: float = 0.0  # LyCORIS rank dropout


def apply(model, c: Config, ctx: Context):
    from peft import LoHaConfig

    return apply_lycoris(model, c, LoHaConfig)


def apply_lycoris(model, c: Config, config_class):
    """LoHa and LoKr take the same arguments in PEFT."""
    from peft import get_peft_model

    config = config_class(task_type="CAUSAL_LM", r=c.r, alpha=c.alpha, rank_dropout=c.dropout,
                          target_modules=peft_targets(model, c.target_modules))
    return get_peft_model(model, config)
