"""Batched greedy generation with PyTorch: left padding, KV cache, deterministic."""

from __future__ import annotations

import time


def greedy_generate(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int = 16,
                    progress: bool = True, desc: str = "generate", prefix: dict | None = None) -> tuple[list[list[int]], dict]:
    """Greedy continuations (token ids, cut at the first stop id: end of turn or any EOS) and speed stats. Similar
    lengths are batched together.

    `prefix` (components/model/kv_prefix.py) is a prompt method's key/value prefix: it becomes the initial
    cache, with positions continuing after it, exactly as in the PEFT model's forward pass.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    from components.prompts.chat import stop_ids

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_ids(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=stops)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    out: list[list[int]] = [[] for _ in prompt_ids]
    new_tokens = 0
    t0 = time.perf_counter()
    model.eval()
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        idx = order[s : s + batch_size]
        width = max(len(prompt_ids[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(prompt_ids[i])
            ids[r, width - n :] = torch.tensor(prompt_ids[i])
            mask[r, width - n :] = 1
        extra, start = {}, width
        if prefix is not None:  # generate() treats cached positions as part of input_ids: stand-ins fill them
            from components.model.kv_prefix import as_cache, prefix_length

            n = prefix_length(prefix)
            ids = torch.cat([torch.full((len(idx), n), pad, dtype=torch.long), ids], dim=1)
            mask = torch.cat([torch.ones((len(idx), n), dtype=torch.long), mask], dim=1)
            extra["past_key_values"] = as_cache({k: v.expand(len(idx), -1, -1, -1) for k, v in prefix.items()}, model.config)
            start = n + width
        with torch.inference_mode():
            gen = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 generation_config=gen_cfg, **extra)
        for r, i in enumerate(idx):
            toks = gen[r, start:].tolist()
            cut = next((k for k, t in enumerate(toks) if t in stops), None)
            if cut is not None:
                toks = toks[:cut]
            out[i] = toks
            new_tokens += len(toks)
    wall = time.perf_counter() - t0
    return out, {"samples": len(prompt_ids), "new_tokens": new_tokens, "wall_s": round(wall, 2),
                 "tokens_per_s": round(new_tokens / wall, 2) if wall else None}
