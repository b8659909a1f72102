from components.data.prepare import IGNORE_INDEX, encode_example, load_prepared, run_prepare, split_rows
from components.data.validate import run_validate
from conftest import tiny_params


def test_split_is_deterministic_and_stable_under_edits():
    rows = [{"question": f"Question number {i}?", "answer": "a"} for i in range(500)]
    train, test = split_rows(rows, 42, 0.1)
    assert 25 <= len(test) <= 80 and len(train) + len(test) == 500
    edited = rows[:10] + [{"question": "A brand new question?", "answer": "b"}] + rows[11:]
    train2, test2 = split_rows(edited, 42, 0.1)
    old = {r["question"] for r in test} - {rows[10]["question"]}
    assert old <= {r["question"] for r in test2}  # no other row moved
    assert split_rows(rows, 43, 0.1)[1] != test  # the seed matters


def test_loss_only_on_answer_tokens_and_truncation(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    p = tiny_params(tmp_path, tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = {"question": "What is the capital of Peru?", "answer": "The capital of Peru is Lima."}
    ex = encode_example(tok, row, p.prepare)
    answer_ids = tok("The capital of Peru is Lima.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labelled = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert labelled == answer_ids
    assert ex["input_ids"][-len(answer_ids):] == answer_ids
    assert tok.decode(ex["input_ids"][: len(ex["input_ids"]) - len(answer_ids)]).endswith("<|im_start|>assistant\n")
    short = encode_example(tok, row, p.prepare.model_copy(update={"max_length": 20}))
    assert short["length"] == 20 and short["full_length"] > 20


def leaked(ds) -> set[str]:
    """Normalised questions that are in both splits (a training row's question is its last user turn)."""
    from components.data.validate import normalise_question

    train = {normalise_question([m["content"] for m in r["messages"] if m["role"] == "user"][-1]) for r in ds["train"]}
    return {normalise_question(q) for q in ds["test"]["question"]} & train


def test_prepare_writes_dataset_and_stats(tiny_model_dir, tmp_path):
    from components.model.base_model import materialise

    p = tiny_params(tmp_path, tiny_model_dir)
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    stats = run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared)
    ds = load_prepared(p.paths.prepared)
    assert len(ds["train"]) == stats["train_rows"] and len(ds["test"]) == stats["test_rows"]
    assert stats["train_rows"] + stats["test_rows"] == 1012
    assert not leaked(ds)  # no test question is also a training question
    assert set(ds["test"]["id"]).isdisjoint(ds["train"]["id"])
    assert stats["truncated"] == 0


def _digest(folder):
    import hashlib
    from pathlib import Path

    return hashlib.md5(b"".join(f.read_bytes() for f in sorted(Path(folder).rglob("*")) if f.is_file())).hexdigest()


def test_prepare_output_is_byte_stable_and_test_split_survives_train_edits(tiny_model_dir, tmp_path):
    """Equal inputs give equal bytes (DVC caches downstream); a train-row edit leaves the test split as it was."""
    import json

    from components.model.base_model import materialise

    p = tiny_params(tmp_path, tiny_model_dir)
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, tmp_path / "a")
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    rows = [json.loads(x) for x in open(f"{p.paths.validated}/train.jsonl")]
    test_ids = set(load_prepared(tmp_path / "a")["test"]["id"])
    victim = next(i for i, r in enumerate(rows) if r["id"] not in test_ids)
    rows[victim]["answer"] = "An edited answer."
    with open(f"{p.paths.validated}/train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, tmp_path / "c")
    assert _digest(tmp_path / "c" / "dataset" / "test") == _digest(tmp_path / "a" / "dataset" / "test")
    assert _digest(tmp_path / "c" / "dataset" / "train") != _digest(tmp_path / "a" / "dataset" / "train")


def test_the_leakage_check_sees_a_test_question_in_train(tiny_model_dir, tmp_path):
    """Negative control for the leakage assertion above: a test question copied into the train split is found."""
    import json

    from components.model.base_model import materialise

    p = tiny_params(tmp_path, tiny_model_dir)
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    rows = [json.loads(x) for x in open(f"{p.paths.validated}/train.jsonl")]
    (tmp_path / "held").mkdir()
    test = rows[:50]
    train = rows[50:] + [{**test[0], "id": "copy", "question": test[0]["question"].upper()}]  # same question, other case
    (tmp_path / "held" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "held" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    run_prepare(tmp_path / "held", p.paths.base_model, p.prepare, tmp_path / "leaky")
    from components.data.validate import normalise_question

    assert leaked(load_prepared(tmp_path / "leaky")) == {normalise_question(test[0]["question"])}


def test_rows_whose_answer_the_cut_removes_are_counted_and_named(tiny_model_dir, tmp_path, capsys):
    """A row whose prompt fills prepare.max_length keeps no answer token: it is left out of training, counted in
    stats.json and named in prepare's line, not dropped silently."""
    import json

    from components.model.base_model import materialise

    rows = [{"question": f"What is {i} plus one?", "answer": f"It is {i + 1}."} for i in range(40)]
    rows += [{"question": f"Read this: {' '.join(['word'] * 120)}. Question {i}: what was repeated?", "answer": "Word."}
             for i in range(12)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = tiny_params(tmp_path, tiny_model_dir, [f"data.path={data}", "prepare.max_length=64", "prepare.test_fraction=0.05"])
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    stats = run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared)
    kept = len(load_prepared(p.paths.prepared)["train"])
    assert stats["dropped_no_answer_tokens"] >= 8 and kept == stats["train_rows"]
    assert kept + stats["dropped_no_answer_tokens"] + stats["test_rows"] == 52  # every row accounted for
    assert f"{stats['dropped_no_answer_tokens']} rows lost every answer token to the cut" in capsys.readouterr().out


def test_mask_history_learns_only_the_last_reply_of_each_conversation(tiny_model_dir, tmp_path):
    """data.mask_history=true, through the validate and prepare stages: a multi-turn row's labels cover its last
    assistant reply (and its end-of-turn token) only; false (the default): every reply."""
    import json

    from transformers import AutoTokenizer

    from components import stages
    from components.model.base_model import materialise

    rows = [{"messages": [{"role": "user", "content": f"Hello number {i}?"}, {"role": "assistant", "content": f"Hi {i}."},
                          {"role": "user", "content": f"What is {i} plus one?"},
                          {"role": "assistant", "content": f"It is {i + 1}."}]} for i in range(30)]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def learned(mask: bool) -> tuple[dict, list[tuple[str, str]]]:
        p = tiny_params(tmp_path, tiny_model_dir, [f"data.path={data}", f"data.mask_history={str(mask).lower()}",
                                                   f"paths.prepared={tmp_path / f'prepared-{mask}'}"])
        materialise(p.model, p.paths.base_model)
        stages.validate(p)
        stats = stages.prepare(p)
        train = load_prepared(p.paths.prepared)["train"]
        return stats, [(r["messages"][-1]["content"], tok.decode([t for t, l in zip(r["input_ids"], r["labels"])
                                                                  if l != IGNORE_INDEX])) for r in train]

    stats, masked = learned(True)
    assert stats["mask_history"] is True and len(masked) == stats["train_rows"] >= 20
    assert all(text == f"{last}<|im_end|>" for last, text in masked)
    stats, full = learned(False)
    assert stats["mask_history"] is False
    assert all(text.startswith("Hi ") and text.endswith(f".<|im_end|>{last}<|im_end|>") for last, text in full)
