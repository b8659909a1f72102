"""Decode speed of the deployable model: PyTorch generate, ONNX fp32, int8 and int4, at batch 1 and 8.

    python benchmarks/inference.py                       # the embedded model, exported here once
    python benchmarks/inference.py --bundle bundle       # a bundle from `peftpipe run` (merged model inside)
    python benchmarks/inference.py --large-vocab         # also a random model with Qwen2's 151,936-token vocabulary

Each quantized variant is timed twice: with the layers only quantized ("layers") and with the token embedding and
LM head quantized too (the pipeline's default, `export.quantize_embeddings`). Quality: the greedy answers'
ROUGE-L against the fp32 ONNX answers to the same prompts (100 = the same text).

Also measures this machine's memory bandwidth in the same run: batch-1 decode reads every weight
once per token, so tokens/s cannot exceed bandwidth / weight bytes; each batch-1 figure is reported
as a fraction of that limit. Time to first token (TTFT) is the prefill of the prompt plus one step.
Writes docs/benchmarks/inference.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from common import env_block, markdown_table, write_json  # noqa: E402

QUESTIONS = ["What is the capital of Peru?", "Who wrote the novel Pride and Prejudice?",
             "Why is the sky blue?", "What does a thermometer measure?", "How many continents are there?",
             "What is photosynthesis?", "Which planet is known as the red planet?", "What is the boiling point of water?"]


def memory_bandwidth_gbs(threads: int, mb: int = 1024, repeats: int = 7) -> float:
    """Best read bandwidth of a reduction over a buffer much larger than the caches (GB/s)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mb * 2**20 // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        float(x.sum())
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


LARGE_VOCAB = dict(vocab_size=151_936, hidden_size=576, intermediate_size=1536, num_hidden_layers=8,
                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)  # Qwen2's vocabulary


def build_large_vocab(work: Path) -> Path:
    """A random Qwen2-architecture model with a 151,936-token vocabulary (no such real model is at hand offline):
    speed and size are real, its answers are not (quality rows compare it with its own fp32 graph only)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = work / "large_vocab" / "model"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        Qwen2ForCausalLM(Qwen2Config(**LARGE_VOCAB)).save_pretrained(folder, safe_serialization=True)
    return folder


def export_variants(model_dir: Path, onnx_dir: Path) -> None:
    """fp32 ONNX, then each variant with embeddings quantized (the default file name) and with the layers only."""
    from components.bundle.format import VARIANTS
    from components.deploy.export import export_onnx
    from components.deploy.quantize import quantize
    from components.model.base_model import load_base

    if not (onnx_dir / "model.onnx").exists():
        onnx_dir.mkdir(parents=True, exist_ok=True)
        model, _ = load_base(model_dir)
        export_onnx(model, onnx_dir, 18)
    for v, f in VARIANTS.items():
        if not (onnx_dir / f).exists():
            quantize(onnx_dir / "model.onnx", onnx_dir / f, v)
        if not (onnx_dir / layers_file(f)).exists():
            quantize(onnx_dir / "model.onnx", onnx_dir / layers_file(f), v, embeddings=False)


def layers_file(f: str) -> str:
    return f.replace(".onnx", ".layers.onnx")


def build_onnx(work: Path, threads: int) -> tuple[Path, Path]:
    """Materialise the embedded model and export it (fp32 ONNX + int8) into work/, once."""
    from components.model.base_model import materialise
    from components.config.params import ModelConfig

    model_dir, onnx_dir = work / "model", work / "onnx"
    if not (model_dir / "config.json").exists():
        materialise(ModelConfig(), model_dir)
    export_variants(model_dir, onnx_dir)
    return model_dir, onnx_dir


def weight_bytes(folder: Path, files: list[str]) -> int:
    return sum((folder / f).stat().st_size for f in files if (folder / f).exists())


def time_torch(model, prompts: list[list[int]], new: int, pad: int) -> dict:
    import torch

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    kw = dict(attention_mask=mask, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
        total = time.perf_counter() - t0
    n = out.shape[1] - width
    return {"ttft_s": ttft, "total_s": total, "new_tokens": n * len(prompts),
            "decode_tokens_per_s": (n - 1) * len(prompts) / max(total - ttft, 1e-9)}


def time_onnx(lm, prompts: list[list[int]], new: int) -> dict:
    t0 = time.perf_counter()
    lm.generate_batch(prompts, 1, None, stop_at_eos=False)
    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = lm.generate_batch(prompts, new, None, stop_at_eos=False)
    total = time.perf_counter() - t0
    n = len(out[0])
    return {"ttft_s": ttft, "total_s": total, "new_tokens": n * len(prompts),
            "decode_tokens_per_s": (n - 1) * len(prompts) / max(total - ttft, 1e-9), "tokens": out}


def rouge_l_vs(tok, answers: list[list[int]], reference: list[list[int]]) -> float:
    """ROUGE-L (x100) of decoded answers against the fp32 graph's answers to the same prompts."""
    from components.evaluation.metrics import corpus_scores

    dec = [tok.decode(a, skip_special_tokens=True).strip() or "-" for a in answers]
    ref = [[tok.decode(a, skip_special_tokens=True).strip() or "-"] for a in reference]
    return round(corpus_scores(dec, ref, "en", "chatglm")["rouge-l"], 2)


def engines_for(model_dir: Path, onnx_dir: Path, model) -> dict[str, tuple[str | None, int]]:
    """{engine name: (ONNX file or None for PyTorch, weight bytes)}: fp32, then each variant with and without the
    embedding and head quantized."""
    from components.bundle.format import VARIANTS

    engines = {"pytorch fp32": (None, sum(p.numel() * p.element_size() for p in model.parameters())),
               "onnx fp32": ("model.onnx", weight_bytes(onnx_dir, ["model.onnx", "model.onnx.data"]))}
    for v in ("int8", "int4"):
        for label, f in ((f"onnx {v} layers", layers_file(VARIANTS[v])), (f"onnx {v}", VARIANTS[v])):
            if (onnx_dir / f).exists():
                engines[label] = (f, weight_bytes(onnx_dir, [f]))
    return engines


def bench_model(tag: str, model_dir: Path, onnx_dir: Path, tok, prompts, args, threads: int, bandwidth: float,
                batches: tuple[int, ...]) -> dict:
    from components.bundle.onnx_decoder import OnnxCausalLM
    from components.model.base_model import load_base

    model, _ = load_base(model_dir)
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    results, reference = {}, None
    for name, (file, nbytes) in engines_for(model_dir, onnx_dir, model).items():
        lm = None if file is None else OnnxCausalLM(onnx_dir, threads, model_file=file)
        for batch in batches:
            batch_prompts = prompts[:batch]
            run = (lambda: time_torch(model, batch_prompts, args.new_tokens, pad)) if lm is None else \
                  (lambda: time_onnx(lm, batch_prompts, args.new_tokens))
            run()  # warm-up
            r = min((run() for _ in range(2)), key=lambda x: x["total_s"])
            tokens = r.pop("tokens", None)
            if name == "onnx fp32" and batch == 1:
                reference = [lm.generate(p, args.new_tokens, None) for p in prompts]
            if lm is not None and batch == 1 and reference is not None:
                r["rouge_l_vs_fp32"] = rouge_l_vs(tok, [lm.generate(p, args.new_tokens, None) for p in prompts],
                                                  reference)
            del tokens
            r["weight_mb"] = round(nbytes / 2**20, 1)
            r["bandwidth_limit_tokens_per_s"] = round(bandwidth * 1e9 / nbytes * batch, 1)
            r["fraction_of_limit"] = round(r["decode_tokens_per_s"] / r["bandwidth_limit_tokens_per_s"], 3)
            results[f"{tag}: {name} b{batch}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
            print(f"{tag}: {name} batch {batch}: {r['decode_tokens_per_s']:.1f} tokens/s, "
                  f"TTFT {r['ttft_s'] * 1000:.0f} ms, {r['fraction_of_limit']:.0%} of the bandwidth limit"
                  + (f", ROUGE-L vs fp32 {r['rouge_l_vs_fp32']:.1f}" if "rouge_l_vs_fp32" in r else ""), flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="a peftpipe bundle (its model.onnx / model.int8.onnx); default: export the embedded model")
    ap.add_argument("--merged", default="models/merged", help="with --bundle: the merged model for the PyTorch rows")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--large-vocab", action="store_true", help="also a random model with a 151,936-token vocabulary")
    ap.add_argument("--workdir", default=".bench/inference")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)

    import os

    import torch
    from transformers import AutoTokenizer

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if args.bundle:
        onnx_dir, model_dir = Path(args.bundle), Path(args.merged)
    else:
        model_dir, onnx_dir = build_onnx(Path(args.workdir), threads)
    bandwidth = memory_bandwidth_gbs(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in QUESTIONS]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) else list(p) for p in prompts]
    results = bench_model("embedded", model_dir, onnx_dir, tok, prompts, args, threads, bandwidth, (1, 8))
    models = {"embedded": str(model_dir)}
    if args.large_vocab:
        large = build_large_vocab(Path(args.workdir))
        export_variants(large, large.parent / "onnx")
        results.update(bench_model("large-vocab", large, large.parent / "onnx", tok, prompts, args, threads,
                                   bandwidth, (1,)))
        models["large-vocab"] = f"random Qwen2 architecture, {LARGE_VOCAB}"
    ratios = {}
    for k, v in results.items():
        tag, rest = k.split(": ", 1)
        base = results[f"{tag}: pytorch fp32 {rest.rsplit(' ', 1)[1]}"]["decode_tokens_per_s"]
        ratios[f"{k}_vs_pytorch"] = round(v["decode_tokens_per_s"] / base, 3)
        layers = k.replace(" b", " layers b", 1) if (" int8 b" in k or " int4 b" in k) else None
        if layers in results:
            ratios[f"{k}_vs_layers_only"] = round(v["decode_tokens_per_s"] / results[layers]["decode_tokens_per_s"], 3)
    command = "python benchmarks/inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"benchmark": "inference", "command": command.strip(), "env": env_block(threads),
              "config": {"models": models, "onnx": str(onnx_dir), "new_tokens": args.new_tokens,
                         "prompts": len(QUESTIONS)},
              "memory_bandwidth_gbs": round(bandwidth, 2), "results": results, "ratios": ratios}
    out = Path(args.out)
    write_json(out / "inference.json", report)
    rows = [[k, v["weight_mb"], f"{v['decode_tokens_per_s']:.1f}", f"{v['ttft_s'] * 1000:.0f}",
             f"{v['bandwidth_limit_tokens_per_s']:.1f}", f"{v['fraction_of_limit']:.0%}",
             f"{ratios[k + '_vs_pytorch']:.2f}x", f"{v['rouge_l_vs_fp32']:.1f}" if "rouge_l_vs_fp32" in v else "-"]
            for k, v in results.items()]
    table = markdown_table(["model: engine, batch", "weights MB", "decode tokens/s", "TTFT ms",
                            "bandwidth limit tokens/s", "of limit", "vs PyTorch", "ROUGE-L vs fp32"], rows)
    (out / "inference.md").write_text(
        f"# Inference speed\n\nCommand: `{report['command']}`\n\nModels: {models}; greedy, {args.new_tokens} new "
        f"tokens per prompt, {threads} threads. Memory bandwidth measured in the same run: {bandwidth:.1f} GB/s. "
        f"The limit column is bandwidth / weight bytes x batch (every weight read once per decode step). "
        f"`layers`: only the decoder layers quantized; without it, the token embedding and LM head too (the default). "
        f"ROUGE-L vs fp32: the batch-1 greedy answers against the fp32 ONNX graph's (100 = the same text).\n\n"
        f"{table}\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 0.35 * len(results) + 1.5))
        names = list(results)
        ax.barh(names, [results[n]["decode_tokens_per_s"] for n in names], label="measured")
        ax.scatter([results[n]["bandwidth_limit_tokens_per_s"] for n in names], names, color="red", marker="|", s=300,
                   label="bandwidth limit")
        ax.set_xlabel("decode tokens/s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "inference.png", dpi=120)
    except ImportError:
        pass
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
