"""Evaluate stage: greedy answers on the test split, scored with BLEU-4 and ROUGE-1/2/L."""

from __future__ import annotations

import json
from pathlib import Path

from components.model.generation import greedy_generate
from components.evaluation.metrics import corpus_bleu, score_samples
from components.evaluation.quality import degenerate_baseline, degeneration
from components.data.prepare import load_prepared
from components.core.atomic import atomic_write_json, atomic_write_text
from components.config.params import Params
from components.core.runtime import resolve_device, set_seed, set_threads


def test_samples(prepared_dir: str | Path, max_samples: int, seed: int) -> list[dict]:
    """Up to max_samples test rows spread over the split, not its head: the rows whose ids hash lowest under
    `seed` (prepare.split_seed), in file order. Adding rows keeps a picked question picked unless a new one
    hashes lower, so subsets of two data versions share most questions."""
    import hashlib

    test = load_prepared(prepared_dir)["test"]
    if max_samples >= len(test):
        return test.to_list()
    ids = test["id"]
    rank = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).digest())
    return test.select(sorted(rank[:max_samples])).to_list()


def prompts_for(samples: list[dict], tokenizer, shots: list[list[dict]] | None, system_prompt: str | None) -> list[list[int]]:
    """Each sample's prompt ids; with in-context examples in front when shots are given."""
    if shots is None:
        return [s["prompt_ids"] for s in samples]
    from components.methods.icl import prompt_ids

    return [prompt_ids(tokenizer, s["messages"], shots, system_prompt) for s in samples]


def eval_loss(model, tokenizer, samples: list[dict], prompts: list[list[int]], batch_size: int,
              eos: list[bool] | None = None) -> float:
    """Mean teacher-forced loss per reference-answer token (answer + end of turn), prompts masked: training's loss at
    the answer positions (components/training/loss.py), added up over the batches. `eos[i]` False: sample i's answer
    was cut at a token limit, so no end of turn is scored after it (unless it decoded to nothing)."""
    import torch

    from components.data.prepare import IGNORE_INDEX
    from components.prompts.chat import end_of_turn
    from components.training.batches import collate
    from components.training.loss import summed_label_loss

    rows = []
    eot = end_of_turn(tokenizer)[1]  # what training learns after a reply
    for n, (s, p) in enumerate(zip(samples, prompts)):
        answer = tokenizer(s["answer"], add_special_tokens=False)["input_ids"]
        answer += [eot] if eos is None or eos[n] or not answer else []  # an empty answer: its end of turn
        rows.append({"input_ids": p + answer, "labels": [IGNORE_INDEX] * len(p) + answer})
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(model.device) for k, v in collate(rows[i : i + batch_size], tokenizer.pad_token_id).items()}
            summed, tokens = summed_label_loss(model, batch)
            total += float(summed)
            count += tokens
    return round(total / count, 5)


def evaluate_model(model, tokenizer, samples: list[dict], params: Params, out_dir: str | Path, label: str,
                   progress: bool = True, shots: list[list[dict]] | None = None, route: str | None = None,
                   drift_base: tuple[dict, dict] | None = None) -> dict:
    """Generate, score and write predictions.jsonl and metrics.json to out_dir; with evaluate.drift_max_new_tokens,
    answer the drift prompts too (components/evaluation/drift.py).

    `route` is the trained method's (components.methods.route); None for the base model. `drift_base`: the base
    model's drift answers (by id) and its drift figures, for a fine-tuned model; None for the base model itself."""
    from components.evaluation import drift
    from components.model import kv_prefix

    cfg = params.evaluate
    prompts = prompts_for(samples, tokenizer, shots, params.prepare.system_prompt)
    loss = eval_loss(model, tokenizer, samples, prompts, cfg.batch_size)
    d_samples = d_prompts = None
    if cfg.drift_max_new_tokens and (label == "base" or drift_base is not None):
        d_samples = drift.drift_samples(tokenizer, drift.read_prompts(params.gates.drift_prompts), params.prepare)
        if drift_base is not None:
            d_samples = drift.matching_base(d_samples, drift_base[0])
        d_prompts = prompts_for(d_samples, tokenizer, shots, params.prepare.system_prompt)
        if drift_base is not None:  # the fine-tuned model's loss on the base model's answers
            d_tuned_loss = eval_loss(model, tokenizer, d_samples, d_prompts, cfg.batch_size,
                                     [s["finished"] for s in d_samples])
    prefix = None
    if route == "kv_prefix":  # generate as deployed: the base model with the learned KV prefix
        prefix, model = kv_prefix.compute_prefix(model), model.get_base_model()
    ids, speed = greedy_generate(model, tokenizer, prompts, cfg.max_new_tokens,
                                 cfg.batch_size, progress, desc=f"evaluate {label}", prefix=prefix)
    preds = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in ids]
    drift_metrics = None
    if d_samples is not None:
        d_ids, _ = greedy_generate(model, tokenizer, d_prompts, cfg.drift_max_new_tokens, cfg.batch_size, progress,
                                   desc=f"drift prompts {label}", prefix=prefix)
        answers = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in d_ids]
        if drift_base is None:  # the base model: its answers, and its own loss on them
            finished = [len(t) < cfg.drift_max_new_tokens for t in d_ids]  # else cut at the limit: no EOS scored
            rows = drift.write_base_answers(out_dir, d_samples, answers, finished)
            own = [{**s, "answer": r["answer"]} for s, r in zip(d_samples, rows)]
            drift_metrics = {"prompts": len(rows),
                             "base_loss": eval_loss(model, tokenizer, own, d_prompts, cfg.batch_size, finished),
                             "degenerate": degenerate_baseline(answers, cfg.language)}
        else:
            drift_metrics = drift.drift_figures(drift_base[1]["base_loss"], d_tuned_loss,
                                                [s["answer"] for s in d_samples], answers,
                                                drift_base[1].get("degenerate"))
            atomic_write_text(Path(out_dir) / "drift_answers.jsonl", "".join(
                json.dumps({"id": s["id"], "prompt": s["question"], "base": s["answer"], "tuned": a},
                           ensure_ascii=False) + "\n" for s, a in zip(d_samples, answers)))
    refs = [s["answer"] for s in samples]
    all_refs = [s.get("answers") or [s["answer"]] for s in samples]
    per = score_samples(preds, all_refs, cfg.language, cfg.metric_style)
    metrics = {name: round(sum(x[name] for x in per) / len(per), 4) for name in per[0]}
    metrics["sacrebleu"] = corpus_bleu(preds, all_refs, cfg.language)
    metrics.update(degeneration(preds, refs, cfg.language))
    metrics["degenerate"] = degenerate_baseline(preds, cfg.language)  # a broken model (or baseline) says so
    if metrics["degenerate"]["degenerate"]:
        print(f"evaluate ({label}): {metrics['degenerate']['line']}")
    metrics["eval_loss"] = loss
    metrics["drift"] = drift_metrics
    metrics.update({"samples": len(samples), "language": cfg.language, "metric_style": cfg.metric_style,
                    "generation": speed})
    out_dir = Path(out_dir)
    cut = [len(t) >= cfg.max_new_tokens for t in ids]  # EOS is stripped: a full-length answer never ended
    metrics["cut_rate"] = round(sum(cut) / len(cut), 4)
    rows = [{"id": s["id"], "question": s["question"], "reference": r, "prediction": p, "scores": sc, "cut": c,
             **({"references": a} if len(a) > 1 else {})}
            for s, r, a, p, sc, c in zip(samples, refs, all_refs, preds, per, cut)]
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    atomic_write_text(out_dir / "worst.md", worst_answers_markdown(rows, label))
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def worst_answers_markdown(rows: list[dict], label: str, k: int = 10) -> str:
    """The k answers with the lowest ROUGE-L, for error analysis."""
    cell = lambda t: t.replace("|", "\\|").replace("\n", " ")[:200]  # noqa: E731
    worst = sorted(rows, key=lambda r: (r["scores"]["rouge-l"], r["id"]))[:k]
    lines = [f"# Worst {len(worst)} answers ({label}) by ROUGE-L", "", "| id | ROUGE-L | question | reference | prediction |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['id']} | {r['scores']['rouge-l']:.1f} | {cell(r['question'])} | {cell(r['reference'])} | "
              f"{cell(r['prediction'])} |" for r in worst]
    return "\n".join(lines) + "\n"


def read_predictions(eval_dir: str | Path, name: str = "predictions.jsonl") -> dict[str, dict]:
    """Per-sample predictions and scores, keyed by id."""
    with open(Path(eval_dir) / name, encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f)}


def run_evaluate(params: Params, which: str, base_dir: str | Path, prepared_dir: str | Path,
                 train_dir: str | Path | None, out_dir: str | Path, eval_base_dir: str | Path | None = None) -> dict:
    """which='base' scores the untrained base model; which='tuned' the fine-tuned one (and its drift from the base
    model's answers in eval_base_dir, when they are there)."""
    from components.evaluation import drift

    from components.model.base_model import load_base
    from components.model.trained import load_trained
    from components.prompts.templates import load_prompt_tokenizer
    from components.methods import route as method_route
    from components.methods.icl import read_shots

    set_threads(params.train.threads)
    set_seed(params.seed)
    shots, route = None, None
    if which == "base":
        model, _ = load_base(base_dir)
    else:
        model, _, name = load_trained(base_dir, train_dir)
        route = method_route(name)
        shots = read_shots(train_dir) if route == "icl" else None
    tokenizer = load_prompt_tokenizer(prepared_dir, base_dir)  # prepare's: the chat template training saw
    model.to(resolve_device(params.train.device))  # evaluation follows train.device
    samples = test_samples(prepared_dir, params.evaluate.max_samples, params.prepare.split_seed)
    drift_base = None
    if which != "base" and eval_base_dir is not None:
        answers = drift.read_base_answers(eval_base_dir)
        base_figures = (json.loads((Path(eval_base_dir) / "metrics.json").read_text()).get("drift")
                        if (Path(eval_base_dir) / "metrics.json").exists() else None)
        if answers and base_figures:
            drift_base = (answers, base_figures)
        elif params.evaluate.drift_max_new_tokens:
            print(f"evaluate: no base answers to the drift prompts in {eval_base_dir}; drift not measured "
                  "(run evaluate_base again)")
    return evaluate_model(model, tokenizer, samples, params, out_dir, which, shots=shots, route=route,
                          drift_base=drift_base)
