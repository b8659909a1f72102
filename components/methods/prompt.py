"""Prompt Tuning (Lester et al., 2021): trained input embeddings prepended to every prompt.

With `init_text` the virtual tokens start as that text's embeddings (the paper's best init).
"""

from __future__ import annotations

from components.methods.base import Context, MethodConfig

FAMILY = "additive"
ROUTE = "kv_prefix"
SAVE = "peft"


class Config(MethodConfig):
    lr: float | None = 3e-2
    num_virtual_tokens: int = 16
    init_text: str | None = "Answer the question in one short, factual sentence."


def apply(model, c: Config, ctx: Context):
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    text = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": c.init_text,
            "tokenizer_name_or_path": str(ctx.base_dir)} if c.init_text else {}
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=c.num_virtual_tokens, **text)
    return get_peft_model(model, config)
