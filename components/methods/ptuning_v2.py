"""P-Tuning v2 (Liu et al., 2022): deep prompts on every layer, reparameterised through an MLP.

This is the ChatGLM recipe (`pre_seq_len` = num_virtual_tokens, `prefix_projection` = true): PEFT's
prefix tuning with a projection. After training only the resulting prefix is needed for inference.
"""

from __future__ import annotations

from components.methods.base import Context, MethodConfig

FAMILY = "additive"
ROUTE = "kv_prefix"
SAVE = "peft"


class Config(MethodConfig):
    lr: float | None = 3e-3           # recipes sweep winner on dolly (docs/benchmarks/recipes.md); 1e-2 diverged at step 9
    num_virtual_tokens: int = 16      # ChatGLM's pre_seq_len
    encoder_hidden_size: int = 512    # width of the projection MLP


def apply(model, c: Config, ctx: Context):
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=c.num_virtual_tokens, prefix_projection=True,
                                encoder_hidden_size=c.encoder_hidden_size)
    return get_peft_model(model, config)
