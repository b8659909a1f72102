"""Decode speed of the deployable model: PyTorch generate, ONNX fp32, int8 and int4, at batch 1 and 8.

    python benchmarks/inference.py                       # the embedded model, exported here once
    python benchmarks/inference.py --bundle bundle       # a bundle from `peftpipe run` (merged model inside)

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


def build_onnx(work: Path, threads: int) -> tuple[Path, Path]:
    """Materialise the embedded model and export it (fp32 ONNX + int8) into work/, once."""
    from components.model.base_model import materialise
    from components.deploy.export import export_onnx
    from components.bundle.format import VARIANTS
    from components.deploy.quantize import quantize
    from components.config.params import ModelConfig

    model_dir, onnx_dir = work / "model", work / "onnx"
    if not (model_dir / "config.json").exists():
        materialise(ModelConfig(), model_dir)
    if not (onnx_dir / "model.onnx").exists():
        from components.model.base_model import load_base

        onnx_dir.mkdir(parents=True, exist_ok=True)
        model, tok = load_base(model_dir)
        export_onnx(model, onnx_dir, 18)
        tok.save_pretrained(onnx_dir)
    for v, f in VARIANTS.items():
        if not (onnx_dir / f).exists():
            quantize(onnx_dir / "model.onnx", onnx_dir / f, v)
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
            "decode_tokens_per_s": (n - 1) * len(prompts) / max(total - ttft, 1e-9)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="a peftpipe bundle (its model.onnx / model.int8.onnx); default: export the embedded model")
    ap.add_argument("--merged", default="models/merged", help="with --bundle: the merged model for the PyTorch rows")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workdir", default=".bench/inference")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)

    import os

    import torch

    from components.model.base_model import load_base
    from components.bundle.onnx_decoder import OnnxCausalLM
    from components.bundle.format import VARIANTS

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if args.bundle:
        onnx_dir, model_dir = Path(args.bundle), Path(args.merged)
    else:
        model_dir, onnx_dir = build_onnx(Path(args.workdir), threads)
    bandwidth = memory_bandwidth_gbs(threads)
    model, tok = load_base(model_dir)
    model.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in QUESTIONS]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) else list(p) for p in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    fp32_bytes = weight_bytes(onnx_dir, ["model.onnx", "model.onnx.data"])
    engines = {"pytorch fp32": (None, sum(p.numel() * p.element_size() for p in model.parameters())),
               "onnx fp32": ("model.onnx", fp32_bytes)}
    for v in ("int8", "int4"):
        if (onnx_dir / VARIANTS[v]).exists():
            engines[f"onnx {v}"] = (VARIANTS[v], weight_bytes(onnx_dir, [VARIANTS[v]]))
    results = {}
    for name, (file, nbytes) in engines.items():
        lm = None if file is None else OnnxCausalLM(onnx_dir, threads, model_file=file)
        for batch in (1, 8):
            batch_prompts = prompts[:batch]
            run = (lambda: time_torch(model, batch_prompts, args.new_tokens, pad)) if lm is None else \
                  (lambda: time_onnx(lm, batch_prompts, args.new_tokens))
            run()  # warm-up
            r = min((run() for _ in range(2)), key=lambda x: x["total_s"])
            r["weight_mb"] = round(nbytes / 2**20, 1)
            r["bandwidth_limit_tokens_per_s"] = round(bandwidth * 1e9 / nbytes * batch, 1)
            r["fraction_of_limit"] = round(r["decode_tokens_per_s"] / r["bandwidth_limit_tokens_per_s"], 3)
            results[f"{name} b{batch}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
            print(f"{name} batch {batch}: {r['decode_tokens_per_s']:.1f} tokens/s, TTFT {r['ttft_s'] * 1000:.0f} ms, "
                  f"{r['fraction_of_limit']:.0%} of the bandwidth limit", flush=True)
    base = {b: results[f"pytorch fp32 b{b}"]["decode_tokens_per_s"] for b in (1, 8)}
    ratios = {f"{k}_vs_pytorch": round(v["decode_tokens_per_s"] / base[int(k[-1])], 3) for k, v in results.items()}
    command = "python benchmarks/inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"benchmark": "inference", "command": command.strip(), "env": env_block(threads),
              "config": {"model": str(model_dir), "onnx": str(onnx_dir), "new_tokens": args.new_tokens,
                         "prompts": len(QUESTIONS)},
              "memory_bandwidth_gbs": round(bandwidth, 2), "results": results, "ratios": ratios}
    out = Path(args.out)
    write_json(out / "inference.json", report)
    rows = [[k, v["weight_mb"], f"{v['decode_tokens_per_s']:.1f}", f"{v['ttft_s'] * 1000:.0f}",
             f"{v['bandwidth_limit_tokens_per_s']:.1f}", f"{v['fraction_of_limit']:.0%}", f"{ratios[k + '_vs_pytorch']:.2f}x"]
            for k, v in results.items()]
    table = markdown_table(["engine, batch", "weights MB", "decode tokens/s", "TTFT ms", "bandwidth limit tokens/s",
                            "of limit", "vs PyTorch"], rows)
    (out / "inference.md").write_text(
        f"# Inference speed\n\nCommand: `{report['command']}`\n\nModel: `{model_dir}`, greedy, {args.new_tokens} new "
        f"tokens per prompt, {threads} threads. Memory bandwidth measured in the same run: {bandwidth:.1f} GB/s. "
        f"The limit column is bandwidth / weight bytes x batch (every weight read once per decode step).\n\n{table}\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
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
