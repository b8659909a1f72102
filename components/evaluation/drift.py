"""Drift: how far fine-tuning moved the model off its general behaviour (catastrophic forgetting).

General prompts that are not the task's (gates.drift_prompts; the project's own set in data/drift_prompts.jsonl)
are answered greedily by the base model once, in evaluate_base. After training, the evaluate stage measures the
fine-tuned model's loss on those base answers against the base model's own loss on them (drift: the increase,
in nats per answer token), and the share of its own answers whose first sentence is still the base model's.
gates.max_drift fails a model that moved further than that.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.data.records import DataError

PROJECT = Path(__file__).resolve().parents[2]
BASE_ANSWERS = "drift_base.jsonl"  # evaluate_base's answers to the drift prompts, beside its predictions


def read_prompts(path: str | Path) -> list[dict]:
    """The drift prompts: JSON lines with a "prompt" (and optionally an "id"), or a text file of one per line."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (PROJECT / path).exists():
        path = PROJECT / path  # the project's own set, from a run outside the checkout
    if not path.exists():
        raise DataError(f"gates.drift_prompts: {path} not found")
    out, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}: row {n}: not JSON ({e})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise DataError(f"{path}: row {n}: needs a non-empty string field \"prompt\"")
            prompt, pid = row["prompt"].strip(), str(row.get("id") or f"drift-{n}")
        else:
            prompt, pid = line.strip(), f"drift-{n}"
        if pid in seen:
            raise DataError(f"{path}: row {n}: id {pid!r} repeats an earlier row")
        seen.add(pid)
        out.append({"id": pid, "prompt": prompt})
    if not out:
        raise DataError(f"{path}: no prompts")
    return out


def drift_samples(tokenizer, prompts: list[dict], prepare_cfg) -> list[dict]:
    """Evaluation samples of the prompts, rendered as the task's questions are (chat template, system prompt)."""
    from components.data.prepare import test_record

    return [{**test_record(tokenizer, {"id": p["id"], "question": p["prompt"], "answer": ""}, prepare_cfg), "answer": ""}
            for p in prompts]


def first_sentence(text: str) -> str:
    """The text up to its first sentence end, lower-cased, spaces collapsed."""
    head = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
    return " ".join(head.lower().split())


def write_base_answers(out_dir: str | Path, samples: list[dict], answers: list[str], finished: list[bool]) -> list[dict]:
    """`finished[i]`: answer i ended with EOS (False: cut at evaluate.drift_max_new_tokens)."""
    from components.core.atomic import atomic_write_text

    rows = [{"id": s["id"], "prompt": s["question"], "answer": a, "finished": f}
            for s, a, f in zip(samples, answers, finished)]
    atomic_write_text(Path(out_dir) / BASE_ANSWERS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def read_base_answers(eval_base_dir: str | Path) -> dict[str, dict] | None:
    f = Path(eval_base_dir) / BASE_ANSWERS
    if not f.exists():
        return None
    with open(f, encoding="utf-8") as fh:
        return {r["id"]: r for r in map(json.loads, fh)}


def matching_base(samples: list[dict], base: dict[str, dict]) -> list[dict]:
    """The samples with the base model's answer as their reference; a prompt the base did not answer is an error
    (the prompts file changed since evaluate_base ran)."""
    missing = [s["id"] for s in samples if s["id"] not in base]
    if missing:
        raise DataError(f"drift prompts {', '.join(missing[:3])} have no base answer; run evaluate_base again "
                        "(`peftpipe run` does)")
    # answers written before "finished" was recorded had their EOS scored on both sides: keep doing so
    return [{**s, "answer": base[s["id"]]["answer"], "finished": base[s["id"]].get("finished", True)} for s in samples]


def drift_figures(base_loss: float, tuned_loss: float, base_answers: list[str], tuned_answers: list[str],
                  degenerate: dict | None = None) -> dict:
    """Drift = the tuned model's loss on the base model's answers minus the base model's own. Base answers that are
    degenerate (empty or looping: a broken baseline) are no reference: drift is then not measured, with the reason."""
    same = sum(first_sentence(a) == first_sentence(b) for a, b in zip(base_answers, tuned_answers))
    out = {"prompts": len(base_answers), "base_loss": base_loss, "tuned_loss": tuned_loss,
           "drift": round(tuned_loss - base_loss, 5),
           "first_sentence_match": round(same / max(len(base_answers), 1), 4)}
    if degenerate and degenerate.get("degenerate"):
        out.update(drift=None, skipped=f"the base model's answers to the drift prompts are degenerate: "
                                       f"{degenerate['line']}")
    return out
