"""Greedy decoding with ONNX Runtime over the exported KV-cache graph (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from components.core.layout import MODEL_ONNX, PREFIX_FILE
from components.prompts.chat import stop_set


def providers(ort, model_file: str) -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and the graph is fp32 (the weight-only int8/int4 MatMulNBits
    kernels are CPU-tuned here); PEFTPIPE_ORT_PROVIDER=cpu forces the CPU."""
    import os

    available = ort.get_available_providers()
    if ("CUDAExecutionProvider" in available and model_file == MODEL_ONNX
            and os.environ.get("PEFTPIPE_ORT_PROVIDER", "auto") != "cpu"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxCausalLM:
    """Runs `model.onnx` (inputs: input_ids, attention_mask, position_ids, past_*; outputs: logits, present_*)."""

    def __init__(self, folder: str | Path, threads: int = 0, model_file: str = MODEL_ONNX):
        import onnxruntime as ort

        folder = Path(folder)
        meta = json.loads((folder / "onnx_io.json").read_text())
        self.layers, self.kv_heads, self.head_dim = meta["layers"], meta["kv_heads"], meta["head_dim"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / model_file), opts, providers=providers(ort, model_file))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.prefix = self._load_prefix(folder / PREFIX_FILE)

    def _load_prefix(self, path: Path) -> list[np.ndarray] | None:
        """A prompt method's key/value prefix (see components/model/kv_prefix.py), fed as the initial cache."""
        if not path.exists():
            return None
        from safetensors.numpy import load_file

        t = load_file(str(path))
        return [t[f"past.{i // 2}.{'kv'[i % 2]}"] for i in range(2 * self.layers)]

    def _empty_past(self) -> list[np.ndarray]:
        if self.prefix is not None:
            return list(self.prefix)
        return [np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32) for _ in range(2 * self.layers)]

    def step(self, ids: list[int], past: list[np.ndarray], offset: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass over `ids` after `offset` cached positions; returns last logits and the new cache."""
        feed = {
            "input_ids": np.asarray([ids], np.int64),
            "attention_mask": np.ones((1, offset + len(ids)), np.int64),
            "position_ids": np.arange(offset, offset + len(ids), dtype=np.int64)[None, :],
        }
        feed.update({name: t for name, t in zip(self.input_names[3:], past)})
        logits, *present = self.session.run(None, feed)
        return logits[0, -1], present

    def stream(self, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | list[int] | None,
               pick: Callable[[np.ndarray], int] | None = None) -> Iterator[int]:
        """Yield tokens one at a time, stopping at a stop id (end of turn or EOS; one id or a list): greedy, or
        drawn by `pick` (components.serving.sampling)."""
        stops = stop_set(eos_token_id)
        past, ids = self._empty_past(), list(prompt_ids)
        offset = past[0].shape[2]  # positions continue after a prefix
        for _ in range(max_new_tokens):
            logits, past = self.step(ids, past, offset)
            offset += len(ids)
            tok = int(np.argmax(logits)) if pick is None else pick(logits)
            if tok in stops:
                return
            yield tok
            ids = [tok]

    def generate(self, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | list[int] | None,
                 on_token: Callable[[int], None] | None = None) -> list[int]:
        out = []
        for tok in self.stream(prompt_ids, max_new_tokens, eos_token_id):
            out.append(tok)
            if on_token:
                on_token(tok)
        return out

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | list[int] | None,
                       stop_at_eos: bool = True) -> list[list[int]]:
        """Greedy decoding of several prompts at once: left padding, masked, positions per row."""
        stops = stop_set(eos_token_id)
        n, width = len(prompts), max(map(len, prompts))
        ids = np.zeros((n, width), np.int64)
        mask = np.zeros((n, width), np.int64)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = p
            mask[r, width - len(p):] = 1
        offset = 0
        if self.prefix is not None:  # every row attends to the prefix; positions continue after it
            offset = self.prefix[0].shape[2]
            past = [np.repeat(t, n, axis=0) for t in self.prefix]
            mask = np.concatenate([np.ones((n, offset), np.int64), mask], axis=1)
        else:
            past = [np.zeros((n, self.kv_heads, 0, self.head_dim), np.float32) for _ in range(2 * self.layers)]
        pos = np.maximum(np.cumsum(mask[:, offset:], axis=1) - 1, 0) + offset
        out: list[list[int]] = [[] for _ in range(n)]
        done = np.zeros(n, bool)
        step_ids = ids
        for _ in range(max_new_tokens):
            feed = {"input_ids": step_ids, "attention_mask": mask, "position_ids": pos}
            feed.update({name: t for name, t in zip(self.input_names[3:], past)})
            logits, *past = self.session.run(None, feed)
            tok = logits[:, -1].argmax(-1)
            for r in range(n):
                if done[r]:
                    continue
                if stop_at_eos and int(tok[r]) in stops:
                    done[r] = True
                else:
                    out[r].append(int(tok[r]))
            if done.all():
                break
            step_ids = tok[:, None].astype(np.int64)
            mask = np.concatenate([mask, np.ones((n, 1), np.int64)], axis=1)
            pos = pos[:, -1:] + 1
        return out
