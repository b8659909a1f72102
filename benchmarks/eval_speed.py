"""The evaluate stage's generation against one `model.generate` call per question, same model and questions.

    python benchmarks/eval_speed.py                       # embedded model, 100 dolly_open_qa test questions
    python benchmarks/eval_speed.py --samples 32 --batch-sizes 8 16

Both arms answer the same test questions greedily with the same max_new_tokens on the embedded
base model (fp32): one `model.generate(...)` per question (the plain way), and
components.model.generation.greedy_generate (what the evaluate stage runs: prompts sorted by length,
left padding, batches of evaluate.batch_size). Speed is real generated tokens/s (answer tokens up
to the EOS; tokens a finished row computes while it waits for its batch do not count). The arms
run interleaved in halves of the questions (A B B A) to spread noise on a shared machine, and the
answers are compared token by token. Writes docs/benchmarks/eval_speed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from common import DATASETS, ROOT, env_block, markdown_table, peak_rss_mb, quiet_enough, write_json
from methods import bench_params, prepare_once


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATASETS / "dolly_open_qa" / "open_qa.jsonl"))
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=0, help="0: evaluate.max_new_tokens from params.yaml")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[0], help="0: evaluate.batch_size from params.yaml")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--wait", type=float, default=0, metavar="MINUTES",
                   help="when the 1-minute load average is above 1.5, wait up to this long for it to fall (0: refuse)")
    p.add_argument("--workdir", default=str(ROOT / ".bench" / "eval_speed"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    return p.parse_args(argv)


def one_at_a_time(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], float]:
    """The plain way: one generate call per question, no padding, greedy."""
    import torch

    eos = tokenizer.eos_token_id
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            toks = gen[0, len(p):].tolist()
            out.append(toks[: toks.index(eos)] if eos in toks else toks)
    return out, time.perf_counter() - t0


def batched(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int):
    from components.model.generation import greedy_generate

    t0 = time.perf_counter()
    ids, _ = greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress=False)
    return ids, time.perf_counter() - t0


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv=None) -> int:
    args = parse_args(argv)
    p = bench_params(args.workdir, args.data, args.max_length, args.threads, [f"evaluate.max_samples={args.samples}"])
    prepare_once(p)

    if not quiet_enough(args.wait):  # other work on the cores would be measured too
        return 2
    import torch

    from components.model.base_model import load_base
    from components.evaluation.evaluate import test_samples
    from components.core.runtime import set_seed, set_threads

    threads = set_threads(args.threads)
    set_seed(p.seed)
    max_new = args.max_new_tokens or p.evaluate.max_new_tokens
    sizes = [b or p.evaluate.batch_size for b in args.batch_sizes]
    model, tok = load_base(p.paths.base_model)
    model.eval()
    samples = test_samples(p.paths.prepared, args.samples, p.prepare.split_seed)
    prompts = [s["prompt_ids"] for s in samples]
    half = len(prompts) // 2
    parts = [prompts[:half], prompts[half:]]
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection count in neither arm
        model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    runs: dict[str, dict] = {"one_at_a_time": {"ids": [None, None], "wall_s": 0.0}}
    for b in sizes:
        runs[f"batched_{b}"] = {"ids": [None, None], "wall_s": 0.0, "batch_size": b}
    order = [(0, name) for name in runs] + [(1, name) for name in reversed(list(runs))]  # A B .. B A
    for part, name in order:
        print(f"[{name}] questions {'first' if part == 0 else 'second'} half ...", flush=True)
        if name == "one_at_a_time":
            ids, wall = one_at_a_time(model, tok, parts[part], max_new)
        else:
            ids, wall = batched(model, tok, parts[part], max_new, runs[name]["batch_size"])
        runs[name]["ids"][part] = ids
        runs[name]["wall_s"] += wall
    ref = runs["one_at_a_time"]["ids"][0] + runs["one_at_a_time"]["ids"][1]
    results = {}
    for name, r in runs.items():
        ids = r["ids"][0] + r["ids"][1]
        diffs = [(i, first_difference(a, b)) for i, (a, b) in enumerate(zip(ids, ref)) if a != b]
        tokens = sum(len(t) for t in ids)
        results[name] = {"batch_size": r.get("batch_size", 1), "questions": len(ids), "new_tokens": tokens,
                         "wall_s": round(r["wall_s"], 2), "tokens_per_s": round(tokens / r["wall_s"], 2),
                         "answers_differing": len(diffs),
                         "first_differing_token": [{"question": i, "position": d} for i, d in diffs]}
    base = results["one_at_a_time"]["tokens_per_s"]
    ratios = {name: round(r["tokens_per_s"] / base, 3) for name, r in results.items() if name != "one_at_a_time"}
    evaluate_arm = f"batched_{p.evaluate.batch_size}"
    command = " ".join(["python benchmarks/eval_speed.py", *(argv if argv is not None else sys.argv[1:])])
    report = {"benchmark": "eval_speed", "command": command, "env": env_block(threads),
              "config": {"data": args.data, "samples": len(prompts), "max_new_tokens": max_new, "batch_sizes": sizes,
                         "evaluate_batch_size": p.evaluate.batch_size, "precision": "fp32", "model": "embedded base"},
              "results": results, "ratios": {"tokens_per_s_vs_one_at_a_time": ratios}, "peak_rss_mb": peak_rss_mb()}
    out = Path(args.out)
    write_json(out / "eval_speed.json", report)
    rows = [[name + (" (evaluate stage)" if name == evaluate_arm else ""), r["batch_size"], r["new_tokens"], r["wall_s"],
             r["tokens_per_s"], f"{r['tokens_per_s'] / base:.2f}x", f"{r['answers_differing']} of {r['questions']}"]
            for name, r in results.items()]
    table = markdown_table(["generation", "batch", "generated tokens", "s", "tokens/s", "vs one at a time",
                            "answers differing from one at a time"], rows)
    from components.core.atomic import atomic_write_text

    env = report["env"]
    atomic_write_text(out / "eval_speed.md", (
        f"# Evaluation speed: batched generation against one generate call per question\n\nCommand: `{command}`\n\n"
        f"Embedded base model (SmolLM2-135M-Instruct, fp32), the first {len(prompts)} dolly_open_qa test questions, "
        f"greedy, up to {max_new} new tokens, {threads} threads on {env['cpu']} ({os.cpu_count()} cores). tokens/s counts "
        f"generated answer tokens up to the EOS. The arms ran interleaved (first half of the questions in order, second "
        f"half in reverse order of arms).\n\n{table}\n"
        f"A differing answer is one whose token ids differ anywhere from the one-at-a-time answer (left padding changes "
        f"the fp32 summation order, which can flip a near-tie argmax); the positions are in eval_speed.json.\n"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([n.replace("_", " ") for n in results], [r["tokens_per_s"] for r in results.values()])
        ax.set_ylabel("generated tokens/s")
        ax.set_title(f"Greedy generation, {len(prompts)} questions, {threads} threads")
        fig.tight_layout()
        fig.savefig(out / "eval_speed.png", dpi=120)
    except ImportError:
        pass
    print(table)
    print(f"vs one at a time: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
