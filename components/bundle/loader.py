"""A deployment bundle, loaded for answering: checksums verified, tokenizer, ONNX model, ICL examples.

`peftpipe generate` and `peftpipe serve` both answer through `Bundle`, so a question becomes the
same prompt (system prompt, in-context examples, chat template) in both, and the same as in evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from components.bundle.format import variant_file, verify_checksums
from components.core.layout import GENERATION_CONFIG, MODEL_CARD_JSON, TEXT_METRICS


class Bundle:
    def __init__(self, folder: str | Path, threads: int = 0, variant: str = "auto"):
        from transformers import AutoTokenizer

        from components.prompts.chat import special_tokens
        from components.methods.icl import read_shots
        from components.bundle.onnx_decoder import OnnxCausalLM

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such bundle directory")
        verify_checksums(self.folder)  # before anything in it is loaded
        self.gen = json.loads((self.folder / GENERATION_CONFIG).read_text())
        card = self.folder / MODEL_CARD_JSON
        self.card = json.loads(card.read_text()) if card.exists() else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.control_tokens = special_tokens(self.tokenizer)  # refused inside client text (see serve.py)
        self.variant, model_file = variant_file(self.folder, variant)
        self.lm = OnnxCausalLM(self.folder, threads, model_file=model_file)
        self.shots = read_shots(self.folder) or []  # an ICL bundle's examples go before the question
        self.eos = self.gen.get("stop_token_ids") or self.gen["eos_token_id"]  # end of turn and every EOS

    def prompt_ids(self, question: str) -> list[int]:
        from components.methods.icl import prompt_ids

        return prompt_ids(self.tokenizer, [{"role": "user", "content": question}], self.shots,
                          self.gen.get("system_prompt"))

    def answer_tokens(self, question: str, max_new_tokens: int | None = None) -> list[int]:
        return self.lm.generate(self.prompt_ids(question), max_new_tokens or self.gen["max_new_tokens"], self.eos)

    def answer(self, question: str, max_new_tokens: int | None = None) -> str:
        return self.decode(self.answer_tokens(question, max_new_tokens))

    def stream(self, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the answer's text as it grows (decoded over all tokens so far, so multi-byte pieces come whole)."""
        toks: list[int] = []
        shown = ""
        for tok in self.lm.stream(self.prompt_ids(question), max_new_tokens or self.gen["max_new_tokens"], self.eos):
            toks.append(tok)
            text = self.decode(toks)
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown):]
                shown = text

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    registry: dict | None = None  # {name, version, stage} when served from the model registry

    def metadata(self) -> dict:
        card = self.card
        return {"bundle": str(self.folder), "base_model": card.get("base_model"), "method": card.get("method"),
                "data": card.get("data"), "metrics": {k: card.get("metrics", {}).get("tuned", {}).get(k)
                                                      for k in TEXT_METRICS},
                "gates_passed": card.get("metrics", {}).get("gates", {}).get("passed"),
                "parity": card.get("parity"), "max_new_tokens": self.gen["max_new_tokens"],
                "variant": self.variant, "variants": card.get("parity", {}).get("variants", {}),
                "icl_shots": len(self.shots), "kv_prefix": self.lm.prefix is not None, "checksums_verified": True,
                "registry": self.registry}
