"""Merge stage: fold the adapter into the base weights and prove the merge changed nothing."""

from __future__ import annotations

from components.core.errors import UserError
import shutil
from pathlib import Path

from components.evaluation.evaluate import test_samples
from components.model.generation import greedy_generate
from components.core.layout import ICL_FILE
from components.methods import get_method, mergeable, route
from components.core.atomic import atomic_dir, atomic_write_json
from components.config.params import Params
from components.core.runtime import set_seed, set_threads
from components.core.verdict import verdict


class MergeCheckFailed(UserError, RuntimeError):
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


def merge_verdict(report: dict) -> dict:
    """The merge-parity verdict of a merge report: logits within tolerance and the same greedy tokens, or
    nothing to compare (a method that ships unchanged weights or its in-context examples)."""
    if "max_abs_logit_diff" not in report:
        return verdict("merge_parity", "merge_parity", report["passed"], None, None, report["route"], skipped=True)
    return verdict("merge_parity", "merge_parity", report["passed"], report["max_abs_logit_diff"], report["tolerance"],
                   f"max |logit diff| {report['max_abs_logit_diff']:.3g} vs tolerance {report['tolerance']:.3g}; "
                   f"greedy tokens equal: {report['greedy_tokens_equal']}; argmax equal: {report['argmax_equal']} "
                   f"({report['route']})")


def run_merge(params: Params, base_dir: str | Path, prepared_dir: str | Path, train_dir: str | Path,
              out_dir: str | Path) -> dict:
    """Write the deployable model (safetensors + tokenizer, plus a KV prefix or ICL examples) and merge_report.json.

    Routes by method: adapters that fold into the weights are merged and checked; prompt methods
    become a KV prefix on the unchanged base, checked the same way; full/selective tuning are
    already weights; ICL ships its examples.
    """
    import torch

    from components.model import kv_prefix
    from components.model.trained import load_trained
    from components.prompts.chat import stop_ids
    from components.prompts.templates import load_prompt_tokenizer

    set_threads(params.train.threads)
    set_seed(params.seed)
    model, _, name = load_trained(base_dir, train_dir)
    tokenizer = load_prompt_tokenizer(prepared_dir, base_dir)  # with the template prepare chose: it ships in the bundle
    method = get_method(name)
    samples = test_samples(prepared_dir, params.merge.check_samples, params.prepare.split_seed)
    seqs = [s["prompt_ids"] + tokenizer(s["answer"], add_special_tokens=False)["input_ids"] for s in samples]
    prompts = [s["prompt_ids"] for s in samples]
    n_new, eos = params.export.max_new_tokens, stop_ids(tokenizer, model.generation_config.eos_token_id)
    how = route(method)
    report: dict = {"method": name, "mergeable": mergeable(method)}
    prefix = None
    if how in ("merge", "kv_prefix"):
        before = [lg[-len(s):] for lg, s in zip(_logits(model, seqs), seqs)]  # prompt tuning returns virtual tokens too
        if how == "merge":
            tokens_before, _ = greedy_generate(model, tokenizer, prompts, n_new, batch_size=1, progress=False)
            model = model.merge_and_unload()
            after = _logits(model, seqs)
            tokens_after, _ = greedy_generate(model, tokenizer, prompts, n_new, batch_size=1, progress=False)
            report["route"] = "merged into the weights"
        else:
            prefix = kv_prefix.compute_prefix(model)
            model = model.get_base_model()  # how evaluate generated (batched, HF generate) vs a plain cached loop
            tokens_before, _ = greedy_generate(model, tokenizer, prompts, n_new, progress=False, prefix=prefix)
            with torch.inference_mode():
                after = [kv_prefix.forward(model, s, prefix)[0].float() for s in seqs]
            tokens_after = [kv_prefix.greedy(model, p, prefix, n_new, eos) for p in prompts]
            report["route"] = f"not mergeable: shipped as a {kv_prefix.prefix_length(prefix)}-position key/value prefix"
        report.update(compare(before, after, params.merge.rtol, params.merge.atol))
        report["greedy_tokens_equal"] = tokens_before == tokens_after
        report["passed"] = report["within_tolerance"] and report["greedy_tokens_equal"]
    elif how == "icl":
        report.update({"passed": True, "route": "not mergeable: no weights change; the in-context examples ship with the model"})
    else:
        report.update({"passed": True, "route": f"nothing to merge: {name} trains the model's own weights"})
    report["verdicts"] = [merge_verdict(report)]
    if not report["passed"]:
        atomic_write_json(Path(str(out_dir) + "_report.json"), report)
        raise MergeCheckFailed(
            f"merge check failed: max |logit diff| {report['max_abs_logit_diff']:.3g} vs tolerance "
            f"{report['tolerance']:.3g}; greedy tokens equal: {report['greedy_tokens_equal']}"
        )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if prefix is not None:
            kv_prefix.save(prefix, tmp)
        if how == "icl":
            shutil.copy(Path(train_dir) / ICL_FILE, tmp / ICL_FILE)
        atomic_write_json(tmp / "merge_report.json", report)
    return report

