"""Quantized ONNX variants of the exported model, shipped only when their quality passes a gate.

Weight-only quantization (ONNX Runtime's MatMulNBits: symmetric blocks of 32 weights with one fp32
scale each, int8 compute inside the kernel, accuracy level 4): `int8` stores every MatMul weight in
8 bits, `int4` in 4. On this machine (AVX2) the embedded fine-tuned model's int8 answers were
identical in ROUGE-L to fp32 (92.2 on 32 test questions), int4 lost 3.6 points. Dynamic int8
quantization (activations quantized too) was tried first and rejected: full-range it saturates the
u8s8 kernels without VNNI (ROUGE-L 92.2 -> 0.6), with a 7-bit range it still lost 13.3 points.

The quality change is the ROUGE-L of the variant's greedy answers minus the fp32 graph's on the same
test questions, against the references; a drop beyond `export.max_quant_rouge_l_drop` keeps the
variant out of the bundle (the verdict is still recorded in the model card).
"""

from __future__ import annotations

import time
from pathlib import Path

from components.bundle.format import BITS, VARIANTS
from components.core.verdict import verdict


def quantize(src: Path, dst: Path, variant: str, block_size: int = 32, embeddings: bool = True) -> dict:
    """Write `variant` of the ONNX model `src` (external data beside it is read) as one file `dst`; with
    `embeddings`, the token embedding and the LM head too (components/deploy/vocab_quant.py). Returns what was
    quantized beyond the layers."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from components.deploy.vocab_quant import int8_embedding, untie_head

    model = onnx.load(str(src))
    extra = {"head": [], "embedding": []}
    if embeddings:
        extra["head"] = untie_head(model)
        if BITS[variant] == 8:
            extra["embedding"] = int8_embedding(model)
    gather = embeddings and BITS[variant] == 4  # ONNX Runtime's GatherBlockQuantized: 4 bits only
    q = MatMulNBitsQuantizer(model, bits=BITS[variant], block_size=block_size, is_symmetric=True, accuracy_level=4,
                             op_types_to_quantize=("MatMul", "Gather") if gather else ("MatMul",),
                             quant_axes=(("MatMul", 0), ("Gather", 1)) if gather else (("MatMul", 0),))
    q.process()
    if gather:
        extra["embedding"] = [n.input[0] for n in q.model.model.graph.node if n.op_type == "GatherBlockQuantized"]
    onnx.save_model(q.model.model, str(dst))
    return extra


def answers(lm, prompts: list[list[int]], max_new_tokens: int, eos: int | list[int] | None) -> tuple[list[list[int]], float]:
    """Greedy token answers and decode tokens/s."""
    t0 = time.perf_counter()
    out = [lm.generate(p, max_new_tokens, eos) for p in prompts]
    dt = time.perf_counter() - t0
    return out, round(sum(map(len, out)) / dt, 2) if dt else 0.0


def quantization_verdict(variant: str, report: dict) -> dict:
    """The quantization check's verdict on one variant, from check_variant's report."""
    return verdict("quantization", variant, report["passed"], report["rouge-l_delta"], -report["max_drop"],
                   f"ROUGE-L {report['rouge-l']:.2f} vs fp32 {report['rouge-l_fp32']:.2f} on {report['samples']} "
                   f"questions ({report['rouge-l_delta']:+.2f}; allowed drop {report['max_drop']:g}): "
                   f"{'shipped' if report['passed'] else 'not shipped'} as {report['file']}")


def check_variant(folder: Path, variant: str, prompts: list[list[int]], references: list[str], tokenizer,
                  max_new_tokens: int, max_drop: float, language: str, style: str = "chatglm", threads: int = 0,
                  fp32: tuple[list[list[int]], float] | None = None, stops: list[int] | None = None,
                  embeddings: bool = True) -> dict:
    """Write the variant into `folder` and compare it with the fp32 graph there; remove it if it fails."""
    from components.evaluation.metrics import corpus_scores
    from components.core.layout import MODEL_ONNX
    from components.bundle.onnx_decoder import OnnxCausalLM

    name = VARIANTS[variant]
    t0 = time.perf_counter()
    extra = quantize(folder / MODEL_ONNX, folder / name, variant, embeddings=embeddings)
    quant_s = time.perf_counter() - t0
    eos = stops if stops is not None else tokenizer.eos_token_id
    if fp32 is None:
        fp32 = answers(OnnxCausalLM(folder, threads), prompts, max_new_tokens, eos)
    quant = answers(OnnxCausalLM(folder, threads, model_file=name), prompts, max_new_tokens, eos)

    def rouge_l(tokens):
        preds = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
        return corpus_scores(preds, references, language, style)["rouge-l"]

    r32, rq = rouge_l(fp32[0]), rouge_l(quant[0])
    report = {"file": name, "samples": len(prompts), "rouge-l_fp32": round(r32, 2), "rouge-l": round(rq, 2),
              "rouge-l_delta": round(rq - r32, 2), "max_drop": max_drop, "passed": r32 - rq <= max_drop,
              "same_answers": sum(a == b for a, b in zip(fp32[0], quant[0])), "tokens_per_s_fp32": fp32[1],
              "tokens_per_s": quant[1], "size_mb": round((folder / name).stat().st_size / 2**20, 1),
              "quantize_s": round(quant_s, 1), "embedding_quantized": bool(extra["embedding"]),
              "head_quantized": bool(extra["head"])}
    if not report["passed"]:
        (folder / name).unlink()
    return report
