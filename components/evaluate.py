"""Evaluate stage: greedy answers on the test split, scored with BLEU-4 and ROUGE-1/2/L."""

from __future__ import annotations

import json
from pathlib import Path

from components.generation import greedy_generate
from components.metrics import corpus_scores
from components.prepare import load_prepared
from peftpipe.atomic import atomic_write_json, atomic_write_text
from peftpipe.config import Params
from peftpipe.runtime import set_seed, set_threads


def test_samples(prepared_dir: str | Path, max_samples: int) -> list[dict]:
    """The first max_samples test rows (the split is already a deterministic hash order)."""
    test = load_prepared(prepared_dir)["test"]
    return test.select(range(min(max_samples, len(test)))).to_list()


def evaluate_model(model, tokenizer, samples: list[dict], params: Params, out_dir: str | Path, label: str,
                   progress: bool = True) -> dict:
    """Generate, score and write predictions.jsonl and metrics.json to out_dir."""
    cfg = params.evaluate
    ids, speed = greedy_generate(model, tokenizer, [s["prompt_ids"] for s in samples], cfg.max_new_tokens,
                                 cfg.batch_size, progress, desc=f"evaluate {label}")
    preds = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in ids]
    refs = [s["answer"] for s in samples]
    scores = corpus_scores(preds, refs)
    metrics = {**scores, "samples": len(samples), "generation": speed}
    out_dir = Path(out_dir)
    lines = [json.dumps({"id": s["id"], "question": s["question"], "reference": r, "prediction": p}, ensure_ascii=False)
             for s, r, p in zip(samples, refs, preds)]
    atomic_write_text(out_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def run_evaluate(params: Params, which: str, base_dir: str | Path, prepared_dir: str | Path,
                 train_dir: str | Path | None, out_dir: str | Path) -> dict:
    """which='base' scores the untrained base model; which='tuned' the fine-tuned one."""
    from components.base_model import load_base
    from components.train import load_trained

    set_threads(params.train.threads)
    set_seed(params.seed)
    if which == "base":
        model, tokenizer = load_base(base_dir)
    else:
        model, tokenizer = load_trained(params, base_dir, train_dir)
    samples = test_samples(prepared_dir, params.evaluate.max_samples)
    return evaluate_model(model, tokenizer, samples, params, out_dir, which)
