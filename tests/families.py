"""Tiny random models of the families users bring, built offline from configs, each with a tokenizer that behaves
as that family's does: BOS added or not, its chat template (or none), its end-of-turn token and EOS ids.

Used by the architecture matrix (tests/unit/model/test_families.py); each model is a few hundred kB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
          "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Mistral's and Gemma 2's templates refuse a system turn (raise_exception), as the real ones do
MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
           "{% elif m['role'] == 'system' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}"
           "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
         "{{ '<start_of_turn>' + role + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
PHI3 = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


@dataclass(frozen=True)
class Family:
    name: str
    config: str                 # transformers config class
    specials: tuple[str, ...]   # special tokens (the first is unk)
    bos: str | None
    eos: str
    adds_bos: bool              # the tokenizer puts BOS in front of encoded text
    template: str | None        # None: a base model without a chat template
    end_of_turn: str            # what the template writes after a reply (eos for templates that write EOS)
    generation_eos: tuple[str, ...] = ()  # generation_config.eos_token_id (several for instruct models)
    extra: dict = field(default_factory=dict)


FAMILIES = {
    "llama": Family("llama", "LlamaConfig", ("<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"), "<|begin_of_text|>", "<|end_of_text|>", True, LLAMA3,
                    "<|eot_id|>", ("<|end_of_text|>", "<|eot_id|>")),
    "qwen2": Family("qwen2", "Qwen2Config", ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"), None,
                    "<|im_end|>", False, CHATML, "<|im_end|>", ("<|im_end|>", "<|endoftext|>")),
    "qwen3": Family("qwen3", "Qwen3Config", ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"), None,
                    "<|endoftext|>", False, CHATML, "<|im_end|>", ("<|im_end|>", "<|endoftext|>"), {"head_dim": 16}),
    "mistral": Family("mistral", "MistralConfig", ("<unk>", "<s>", "</s>"), "<s>", "</s>", True, MISTRAL, "</s>"),
    "gemma2": Family("gemma2", "Gemma2Config", ("<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
                     "<bos>", "<eos>", True, GEMMA, "<end_of_turn>", ("<eos>", "<end_of_turn>"),
                     {"head_dim": 16, "sliding_window": 256, "query_pre_attn_scalar": 16}),
    "gemma3": Family("gemma3", "Gemma3TextConfig", ("<unk>", "<pad>", "<bos>", "<eos>"), "<bos>", "<eos>", True, None,
                     "<eos>", (), {"head_dim": 16, "sliding_window": 32, "query_pre_attn_scalar": 16}),
    "phi3": Family("phi3", "Phi3Config", ("<unk>", "<s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>",
                   "<|end|>"), "<s>", "<|endoftext|>", False, PHI3, "<|end|>", ("<|endoftext|>", "<|end|>")),
}


def build_family(name: str, folder: str | Path, texts: list[str], seed: int = 0, **config_overrides) -> Path:
    """A random 2-layer model of `name` and its tokenizer, saved (safetensors) in folder."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    fam = FAMILIES[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=fam.specials[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(fam.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if fam.adds_bos:
        bos_id = tok.token_to_id(fam.bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{fam.bos} $A", pair=f"{fam.bos} $A $B",
                                                           special_tokens=[(fam.bos, bos_id)])
    pad = "<pad>" if "<pad>" in fam.specials else fam.eos
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=fam.eos, pad_token=pad, bos_token=fam.bos,
                                   unk_token=fam.specials[0])
    fast.add_special_tokens({"additional_special_tokens": [t for t in fam.specials
                                                          if t not in (fam.eos, pad, fam.bos, fam.specials[0])]})
    if fam.template:
        fast.chat_template = fam.template
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = getattr(transformers, fam.config)(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, **{**fam.extra, **config_overrides})
    model = AutoModelForCausalLM.from_config(config)
    if fam.generation_eos:
        model.generation_config = GenerationConfig(bos_token_id=fast.bos_token_id, pad_token_id=fast.pad_token_id,
                                                   eos_token_id=[fast.convert_tokens_to_ids(t) for t in fam.generation_eos])
    model.save_pretrained(folder, safe_serialization=True)
    return folder
