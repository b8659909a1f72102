"""Prefix-Tuning (Li & Liang, 2021): trained key/value vectors prepended at every layer.

The prefix is a direct parameter (no reparameterisation); see `ptuning_v2` for the MLP variant.
"""

from __future__ import annotations

from components.methods.base import Context, MethodConfig

FAMILY = "additive"
MERGEABLE = False  # the prefix is extra attention context, not a weight change: it ships as a KV prefix
SAVE = "peft"


class Config(MethodConfig):
    lr: float | None = 1e-2
    num_virtual_tokens: int = 16


def apply(model, c: Config, ctx: Context):
    from peft import PrefixTuningConfig, get_peft_model

    return get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=c.num_virtual_tokens))
