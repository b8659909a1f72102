"""Quantized ONNX variants of the exported model, shipped only when their quality passes a gate.

int8: ONNX Runtime's dynamic quantization (int8 weights per output channel, 7-bit range,
activations quantized on the fly) of every MatMul, 4x fewer weight bytes than fp32, so batch-1 decode, which reads every
weight once per token, can run about that much closer to the memory-bandwidth limit. The quality
change is measured as the ROUGE-L of the variant's greedy answers minus the fp32 graph's answers on
the same test questions, against the references; a drop beyond `export.max_quant_rouge_l_drop`
keeps the variant out of the bundle (the verdict is still recorded in the model card).
"""

from __future__ import annotations

import time
from pathlib import Path

VARIANTS = {"int8": "model.int8.onnx"}


def quantize_int8(src: Path, dst: Path) -> None:
    """Per-channel int8 weights with a 7-bit range: without VNNI (AVX2, AVX-512 before VNNI) ONNX Runtime's
    u8s8 kernels saturate on full-range int8 weights; on this machine that turned the fine-tuned model's
    answers into noise (ROUGE-L 92.2 -> 0.6), with reduce_range they stay close to fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"])


def answers(lm, prompts: list[list[int]], max_new_tokens: int, eos: int | None) -> tuple[list[list[int]], float]:
    """Greedy token answers and decode tokens/s."""
    t0 = time.perf_counter()
    out = [lm.generate(p, max_new_tokens, eos) for p in prompts]
    dt = time.perf_counter() - t0
    return out, round(sum(map(len, out)) / dt, 2) if dt else 0.0


def check_variant(folder: Path, variant: str, prompts: list[list[int]], references: list[str], tokenizer,
                  max_new_tokens: int, max_drop: float, language: str, threads: int = 0,
                  fp32: tuple[list[list[int]], float] | None = None) -> dict:
    """Write the variant into `folder` and compare it with the fp32 graph there; remove it if it fails."""
    from components.metrics import corpus_scores
    from components.onnx_runtime import MODEL_FILE, OnnxCausalLM

    name = VARIANTS[variant]
    t0 = time.perf_counter()
    quantize_int8(folder / MODEL_FILE, folder / name)
    quant_s = time.perf_counter() - t0
    eos = tokenizer.eos_token_id
    if fp32 is None:
        fp32 = answers(OnnxCausalLM(folder, threads), prompts, max_new_tokens, eos)
    quant = answers(OnnxCausalLM(folder, threads, model_file=name), prompts, max_new_tokens, eos)

    def rouge_l(tokens):
        preds = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
        return corpus_scores(preds, references, language)["rouge-l"]

    r32, rq = rouge_l(fp32[0]), rouge_l(quant[0])
    report = {"file": name, "samples": len(prompts), "rouge-l_fp32": round(r32, 2), "rouge-l": round(rq, 2),
              "rouge-l_delta": round(rq - r32, 2), "max_drop": max_drop, "passed": r32 - rq <= max_drop,
              "same_answers": sum(a == b for a, b in zip(fp32[0], quant[0])), "tokens_per_s_fp32": fp32[1],
              "tokens_per_s": quant[1], "size_mb": round((folder / name).stat().st_size / 2**20, 1),
              "quantize_s": round(quant_s, 1)}
    if not report["passed"]:
        (folder / name).unlink()
    return report
