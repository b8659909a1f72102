"""Prepare stage: deterministic split, chat template, tokenisation with loss on answers only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from components.prompts.chat import (IGNORE_INDEX, adds_bos, control_token_in, encode_conversation, encode_text,
                                     end_of_turn, render, special_tokens, stop_ids, with_system)
from components.prompts.templates import PROMPT_TOKENIZER
from components.prompts.templates import apply as apply_template
from components.data.records import DataError
from components.data.validate import normalise_question, question_id
from components.core.atomic import atomic_dir, atomic_write_json
from components.config.params import PrepareConfig

__all__ = ["IGNORE_INDEX", "run_prepare", "load_prepared", "encode_example", "split_rows"]


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def in_test_split(question: str, seed: int, fraction: float) -> bool:
    """Hash-based split: stable per question, so editing one row moves no other row."""
    digest = hashlib.sha256(f"{seed}:{normalise_question(question)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_rows(rows: list[dict], seed: int, fraction: float) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    for r in rows:
        (test if in_test_split(r["question"], seed, fraction) else train).append(r)
    return train, test


def conversation(row: dict) -> list[dict]:
    """The row as chat turns: its own conversation, or one user question and its answer."""
    return row.get("messages") or [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]


def encode_example(tokenizer, row: dict, cfg: PrepareConfig, cut: bool = True, mask_history: bool = False) -> dict:
    """input_ids and labels (loss on assistant replies only; with `mask_history` (data.mask_history) on the last
    reply only), truncated to cfg.max_length when it is a number and `cut` (prepare cuts max_length: auto's rows
    once it has every row's length)."""
    ids, labels = encode_conversation(tokenizer, with_system(conversation(row), cfg.system_prompt),
                                      last_only=mask_history)
    limit = cfg.max_length if cut and cfg.max_length != "auto" else None
    return truncated({"input_ids": ids, "labels": labels, "full_length": len(ids), "messages": _plain(conversation(row))},
                     limit)


def truncated(e: dict, max_length: int | None) -> dict:
    """An encoded example cut to max_length tokens, with its length and answer-token count."""
    ids, labels = e["input_ids"][:max_length], e["labels"][:max_length]
    return {**e, "input_ids": ids, "labels": labels, "length": len(ids),
            "answer_tokens": sum(1 for x in labels if x != IGNORE_INDEX)}


def prepared_max_length(prepared_dir: str | Path) -> int:
    """The max_length the prepared rows were cut to (prepare.max_length, resolved when auto)."""
    return int(json.loads((Path(prepared_dir) / "stats.json").read_text())["max_length"])


def _plain(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def test_record(tokenizer, row: dict, cfg: PrepareConfig) -> dict:
    """An evaluation sample: the conversation up to its last user turn as the prompt; every reference kept."""
    messages = _plain(conversation(row)[:-1])
    prompt = render(tokenizer, with_system(messages, cfg.system_prompt), add_generation_prompt=True)
    ids = encode_text(tokenizer, prompt)
    return {"id": row.get("id") or question_id(row["question"]), "question": row["question"], "answer": row["answer"],
            "answers": row.get("answers") or [row["answer"]], "prompt": prompt, "messages": messages,
            "prompt_ids": ids}


def refuse_control_tokens(validated_dir: Path, splits: dict[str, list[dict]], tokens: list[str]) -> None:
    """A row whose text holds one of the base model's control tokens (validate catches the <|...|> kind; this
    catches the model's own, such as </s>) stops prepare with its file, row and token: it would fake a turn."""
    for split, rows in splits.items():
        for n, r in enumerate(rows, start=1):
            texts = [r.get("question", ""), r.get("answer", ""), *(m.get("content", "") for m in r.get("messages") or [])]
            hit = next((t for t in (control_token_in(x, tokens) for x in texts) if t), None)
            if hit:
                raise DataError(f"{validated_dir / (split + '.jsonl')}: row {n}: rule control_tokens: the text holds the "
                                f"model's control token {hit!r}; remove it from the data")


def _length_stats(lengths: list[int]) -> dict:
    a = np.asarray(lengths or [0])
    return {"mean": round(float(a.mean()), 2), "p50": int(np.percentile(a, 50)), "p95": int(np.percentile(a, 95)),
            "max": int(a.max())}


def run_prepare(validated_dir: str | Path, base_model_dir: str | Path, cfg: PrepareConfig, out_dir: str | Path,
                mask_history: bool = False) -> dict:
    """Split, render and tokenise; save a DatasetDict (train, test) and stats.json. `mask_history`
    (data.mask_history): a multi-turn row's loss covers its last assistant reply only."""
    from datasets import DatasetDict
    from transformers import AutoTokenizer

    validated_dir = Path(validated_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    template_why = apply_template(tokenizer, cfg.chat_template)
    eot_text, _ = end_of_turn(tokenizer)
    rows = read_jsonl(validated_dir / "train.jsonl")
    held_out = read_jsonl(validated_dir / "test.jsonl") if (validated_dir / "test.jsonl").exists() else None
    refuse_control_tokens(validated_dir, {"train": rows, "test": held_out or []}, special_tokens(tokenizer))
    if held_out is not None:
        train, test = rows, held_out
    else:
        train, test = split_rows(rows, cfg.split_seed, cfg.test_fraction)
    if not train or not test:
        raise ValueError(f"split left {len(train)} train and {len(test)} test rows; adjust prepare.test_fraction")

    full = [encode_example(tokenizer, r, cfg, cut=False, mask_history=mask_history) for r in train]
    limit = cfg.resolve_max_length([e["full_length"] for e in full])
    enc = [truncated(e, limit) for e in full]
    dropped = sum(1 for e in enc if e["answer_tokens"] == 0)
    train_records = [{"id": r.get("id") or question_id(r["question"]), **e} for r, e in zip(train, enc) if e["answer_tokens"] > 0]
    test_records = [test_record(tokenizer, r, cfg) for r in test]
    stats = {
        "train_rows": len(train_records), "test_rows": len(test_records),
        "dropped_no_answer_tokens": dropped,
        "truncated": sum(1 for e in enc if e["full_length"] > limit),
        "truncation_rate": round(sum(1 for e in enc if e["full_length"] > limit) / max(len(enc), 1), 4),
        "train_tokens": sum(e["length"] for e in enc), "train_answer_tokens": sum(e["answer_tokens"] for e in enc),
        "train_length": _length_stats([e["full_length"] for e in enc]),
        "max_length": limit, "max_length_setting": cfg.max_length, "mask_history": mask_history,
        "prompt": {"chat_template": template_why, "bos": adds_bos(tokenizer), "end_of_turn": eot_text,
                   "stop_ids": stop_ids(tokenizer)},
        # what training is made from, by content: a checkpoint resumes only on the same token ids and labels
        "content_sha256": hashlib.sha256(json.dumps([[r["input_ids"], r["labels"]] for r in train_records])
                                         .encode()).hexdigest(),
    }
    ds = DatasetDict({"train": _dataset(train_records), "test": _dataset(test_records)})
    with atomic_dir(out_dir) as tmp:
        ds.save_to_disk(str(tmp / "dataset"))
        atomic_write_json(tmp / "stats.json", stats)
        tokenizer.save_pretrained(tmp / PROMPT_TOKENIZER)  # every later stage and the bundle render with it
    how = f"auto: the 99th percentile, cap {cfg.max_length_cap}" if cfg.max_length == "auto" else "prepare.max_length"
    print(f"prepare: rows cut at {limit} tokens ({how}); {stats['truncated']} of {len(enc)} train rows truncated "
          f"({stats['truncation_rate']:.1%}); longest {stats['train_length']['max']}" +
          (f"; {dropped} rows lost every answer token to the cut and are left out of training (raise "
           "prepare.max_length or max_length_cap, or shorten their prompts)" if dropped else ""))
    return stats


def _dataset(records: list[dict]):
    """A Dataset whose fingerprint comes from its content, so equal data gives byte-equal files (DVC caching)."""
    from datasets import Dataset

    ds = Dataset.from_list(records)
    ds._fingerprint = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16]
    return ds


def load_prepared(prepared_dir: str | Path):
    from datasets import load_from_disk

    return load_from_disk(str(Path(prepared_dir) / "dataset"))
