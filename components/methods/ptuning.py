"""P-Tuning (Liu et al., 2021): virtual input tokens produced by a small prompt encoder (MLP or LSTM)."""

from __future__ import annotations

from typing import Literal

from components.methods.base import Context, MethodConfig

FAMILY = "additive"
ROUTE = "kv_prefix"
SAVE = "peft"


class Config(MethodConfig):
    lr: float | None = 1e-2
    num_virtual_tokens: int = 16
    encoder_hidden_size: int = 256
    encoder: Literal["MLP", "LSTM"] = "MLP"


def apply(model, c: Config, ctx: Context):
    from peft import PromptEncoderConfig, get_peft_model

    config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=c.num_virtual_tokens,
                                 encoder_hidden_size=c.encoder_hidden_size, encoder_reparameterization_type=c.encoder)
    return get_peft_model(model, config)
