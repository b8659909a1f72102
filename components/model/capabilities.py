"""What peftpipe can do with a model family, decided from its config before anything trains.

The base_model stage refuses what a family cannot do with one line (never at export), and `peftpipe model inspect`
shows the same facts. Families are transformers' `model_type`s; the matrix in tests/families.py covers each one
listed in TESTED.
"""

from __future__ import annotations

from components.core.errors import ConfigError

# run end to end in the architecture matrix (prepare, train, evaluate, merge, ONNX export with KV cache, serve)
TESTED = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3")
LARGE_VOCAB = 100_000  # from here the embedding and LM head dominate a small model's bytes


def embedding_share(config) -> float:
    """The share of the model's weights in its token embedding (and in an untied LM head)."""
    vocab, hidden = config.vocab_size, config.hidden_size
    layers = config.num_hidden_layers
    inter = getattr(config, "intermediate_size", 4 * hidden)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attn = hidden * head_dim * (heads * 2 + kv * 2)
    per_layer = attn + 3 * hidden * inter
    emb = vocab * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return emb / (emb + layers * per_layer)


def longest_sequence(params) -> int:
    """The most positions a run's prompts and answers can take: the prepared rows' cap plus the generated tokens."""
    rows = params.prepare.max_length if params.prepare.max_length != "auto" else params.prepare.max_length_cap
    return rows + max(params.evaluate.max_new_tokens, params.export.max_new_tokens)


def check_supported(config, params=None) -> list[str]:
    """Notes on what this model gets; raises ConfigError (one line) for what it cannot do with these params."""
    kind = getattr(config, "model_type", "?")
    notes = []
    window = getattr(config, "sliding_window", None)
    if kind == "gemma2" and window and params is not None and longest_sequence(params) > window:
        # measured on the matrix's tiny Gemma 2: past the window, the exported KV-cache graph fails (GatherND index)
        # and a prompt method's prefix decodes differently from PyTorch; within it, every stage passes parity
        raise ConfigError(f"model: {kind} attends through a sliding window of {window} positions, and this run's "
                          f"prompts and answers reach {longest_sequence(params)} (prepare.max_length_cap or max_length "
                          f"+ max_new_tokens); peftpipe's KV-cache export is exact only within the window: lower "
                          f"prepare.max_length_cap to {window - max(params.evaluate.max_new_tokens, params.export.max_new_tokens)}")
    if kind not in TESTED:
        notes.append(f"{kind} is not in the tested matrix ({', '.join(TESTED)}): every stage still checks parity")
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"model: {kind} is an encoder-decoder model; peftpipe tunes decoder-only causal LMs")
    if config.vocab_size >= LARGE_VOCAB:
        notes.append(f"large vocabulary ({config.vocab_size:,}): {embedding_share(config):.0%} of the weights are "
                     "the embedding and LM head")
    return notes
