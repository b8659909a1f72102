"""Prompt methods as a key/value prefix: how prefix, P-Tuning v2, P-Tuning and prompt tuning deploy.

None of them changes a weight: each adds context that every prompt attends to. That context is
the same for every prompt, so it is computed once into per-layer key/value tensors (for prompt
tuning and P-Tuning: by running the base model over the virtual token embeddings). The base model
plus this prefix, fed as the initial KV cache with positions starting after it, gives the same
logits as the PEFT model, in PyTorch and in the exported ONNX graph alike.
"""

from __future__ import annotations

from components.core.layout import PREFIX_FILE


def is_prompt_learning(model) -> bool:
    return bool(getattr(model, "peft_config", None)) and model.active_peft_config.is_prompt_learning


def compute_prefix(peft_model) -> dict:
    """{'past.{i}.k': [1, kv_heads, n, head_dim], 'past.{i}.v': ...} from a trained prompt-learning model."""
    import torch

    with torch.inference_mode():
        prompt = peft_model.get_prompt(batch_size=1)
        if not hasattr(prompt, "layers"):  # virtual token embeddings: run them through the base model
            base = peft_model.get_base_model()
            prompt = base(inputs_embeds=prompt, use_cache=True).past_key_values
    out = {}
    for i, layer in enumerate(prompt.layers):
        out[f"past.{i}.k"] = layer.keys.detach().clone().contiguous()
        out[f"past.{i}.v"] = layer.values.detach().clone().contiguous()
    return out


def prefix_length(prefix: dict) -> int:
    return int(prefix["past.0.k"].shape[2])


def as_cache(prefix: dict, config):
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for i in range(len(prefix) // 2):
        cache.update(prefix[f"past.{i}.k"].clone(), prefix[f"past.{i}.v"].clone(), i)
    return cache


def forward(model, ids: list[int], prefix: dict):
    """Logits [len(ids), vocab] of the base model over ids after the prefix, plus the grown cache."""
    import torch

    n = prefix_length(prefix)
    out = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, n + len(ids), dtype=torch.long),
                position_ids=torch.arange(n, n + len(ids)).unsqueeze(0), past_key_values=as_cache(prefix, model.config),
                use_cache=True)
    return out.logits[0], out.past_key_values


def greedy(model, prompt_ids: list[int], prefix: dict, max_new_tokens: int, eos_token_id: int | list[int] | None) -> list[int]:
    """Greedy decoding with the prefix as the initial cache (batch 1), stopping at any stop id."""
    import torch

    from components.prompts.chat import stop_set

    stops = stop_set(eos_token_id)

    n, cache, out = prefix_length(prefix), as_cache(prefix, model.config), []
    ids, offset = list(prompt_ids), 0
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            res = model(input_ids=torch.tensor([ids]),
                        attention_mask=torch.ones(1, n + offset + len(ids), dtype=torch.long),
                        position_ids=torch.arange(n + offset, n + offset + len(ids)).unsqueeze(0),
                        past_key_values=cache, use_cache=True)
            cache, offset = res.past_key_values, offset + len(ids)
            tok = int(res.logits[0, -1].argmax())
            if tok in stops:
                break
            out.append(tok)
            ids = [tok]
    return out


def save(prefix: dict, folder) -> None:
    from safetensors.torch import save_file

    save_file(prefix, folder / PREFIX_FILE)


def load(folder) -> dict | None:
    from pathlib import Path

    from safetensors.torch import load_file

    f = Path(folder) / PREFIX_FILE
    return load_file(f) if f.exists() else None
