"""Prefix-Tuning (Li & Liang, 2021): trained key/value vectors prepended at every layer.

The prefix is a direct parameter (no reparameterisation); see `ptuning_v2` for the MLP variant.
A random prefix starts far from anything the model has seen (train loss starts near 8 on the
embedded model), so by default it starts as the keys and values of a real text, the paper's
"activations of real words" initialisation: the untrained model then behaves exactly as if that
text were prepended to every prompt.
"""

from __future__ import annotations

from components.methods.base import Context, MethodConfig

FAMILY = "additive"
ROUTE = "kv_prefix"  # the prefix is extra attention context, not a weight change: it ships as a KV prefix
SAVE = "peft"


class Config(MethodConfig):
    lr: float | None = 3e-3
    num_virtual_tokens: int = 16
    init_text: str | None = "Answer the question in one short, factual sentence."  # null: random init


def apply(model, c: Config, ctx: Context):
    from peft import PrefixTuningConfig, get_peft_model

    peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=c.num_virtual_tokens))
    if c.init_text:
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(ctx.base_dir)(c.init_text, add_special_tokens=False)["input_ids"]
        init_from_tokens(peft_model, ids)
    return peft_model


def init_from_tokens(peft_model, ids: list[int]) -> None:
    """Set the prefix to the base model's keys and values over `ids` (repeated or cut to the prefix length)."""
    import torch

    emb = peft_model.prompt_encoder["default"].embedding
    n = emb.weight.shape[0]
    if not ids:
        raise ValueError("prefix init_text has no tokens")
    ids = (ids * (n // len(ids) + 1))[:n]
    with torch.no_grad():
        cache = peft_model.get_base_model()(input_ids=torch.tensor([ids]), use_cache=True).past_key_values
        parts = [t[0] for layer in cache.layers for t in (layer.keys, layer.values)]  # each [kv_heads, n, head_dim]
        # PEFT views a row as [layers * 2, kv_heads, head_dim] (keys then values per layer), one row per token
        weight = torch.stack(parts).permute(2, 0, 1, 3).reshape(n, -1)
        if weight.shape != emb.weight.shape:
            raise ValueError(f"prefix layout {tuple(emb.weight.shape)} does not match the model's cache {tuple(weight.shape)}")
        emb.weight.copy_(weight)
