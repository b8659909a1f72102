"""LoRA (Hu et al., 2021) through PEFT."""

from __future__ import annotations

MERGEABLE = True
ADAPTER = True


def apply(model, train_cfg):
    from peft import LoraConfig, TaskType, get_peft_model

    c = train_cfg.lora
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                        target_modules=list(c.target_modules))
    return get_peft_model(model, config)
