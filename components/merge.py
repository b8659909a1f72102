"""Merge stage: fold the adapter into the base weights and prove the merge changed nothing."""

from __future__ import annotations

from pathlib import Path

from components.evaluate import test_samples
from components.generation import greedy_generate
from components.methods import get_method
from peftpipe.atomic import atomic_dir, atomic_write_json
from peftpipe.config import Params
from peftpipe.runtime import set_seed, set_threads


class MergeCheckFailed(RuntimeError):
    pass


def _logits(model, sequences: list[list[int]]):
    import torch

    with torch.inference_mode():
        return [model(input_ids=torch.tensor([s])).logits[0].float() for s in sequences]


def compare(before: list, after: list, rtol: float, atol: float) -> dict:
    """Max abs logit difference against a tolerance scaled to the logits' magnitude."""
    max_diff = max(float((a - b).abs().max()) for a, b in zip(before, after))
    scale = max(float(a.abs().max()) for a in before)
    argmax_equal = all(bool((a.argmax(-1) == b.argmax(-1)).all()) for a, b in zip(before, after))
    tol = atol + rtol * scale
    return {"max_abs_logit_diff": max_diff, "max_abs_logit": scale, "tolerance": tol,
            "argmax_equal": argmax_equal, "within_tolerance": max_diff <= tol}


def run_merge(params: Params, base_dir: str | Path, prepared_dir: str | Path, train_dir: str | Path,
              out_dir: str | Path) -> dict:
    """Write the merged model (safetensors + tokenizer) and merge_report.json."""
    from components.train import load_trained

    set_threads(params.train.threads)
    set_seed(params.seed)
    method = get_method(params.train.method)
    model, tokenizer = load_trained(params, base_dir, train_dir)
    samples = test_samples(prepared_dir, params.merge.check_samples)
    seqs = [s["prompt_ids"] + tokenizer(s["answer"], add_special_tokens=False)["input_ids"] for s in samples]
    prompts = [s["prompt_ids"] for s in samples]
    report: dict = {"method": params.train.method, "mergeable": method.MERGEABLE}
    if method.MERGEABLE:
        before = _logits(model, seqs)
        tokens_before, _ = greedy_generate(model, tokenizer, prompts, params.export.max_new_tokens, progress=False)
        model = model.merge_and_unload()
        after = _logits(model, seqs)
        tokens_after, _ = greedy_generate(model, tokenizer, prompts, params.export.max_new_tokens, progress=False)
        report.update(compare(before, after, params.merge.rtol, params.merge.atol))
        report["greedy_tokens_equal"] = tokens_before == tokens_after
        report["passed"] = report["within_tolerance"] and report["greedy_tokens_equal"]
    else:
        report.update({"passed": True, "note": f"{params.train.method} trains the weights directly; nothing to merge"})
    if not report["passed"]:
        atomic_write_json(Path(str(out_dir) + "_report.json"), report)
        raise MergeCheckFailed(
            f"merge check failed: max |logit diff| {report['max_abs_logit_diff']:.3g} vs tolerance "
            f"{report['tolerance']:.3g}; greedy tokens equal: {report['greedy_tokens_equal']}"
        )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "merge_report.json", report)
    return report
