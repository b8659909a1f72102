"""IA3 (Liu et al., 2022): learned vectors that rescale keys, values and feed-forward activations."""

from __future__ import annotations

from components.methods.base import Context, MethodConfig, peft_targets

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(MethodConfig):
    lr: float | None = 1e-2
    target_modules: list[str] = ["k_proj", "v_proj", "down_proj"]
    feedforward_modules: list[str] = ["down_proj"]


def apply(model, c: Config, ctx: Context):
    from peft import IA3Config, get_peft_model

    config = IA3Config(task_type="CAUSAL_LM", target_modules=peft_targets(model, c.target_modules),
                       feedforward_modules=peft_targets(model, c.feedforward_modules))
    return get_peft_model(model, config)
