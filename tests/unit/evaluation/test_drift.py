"""The drift measurement: the project's general prompts, the prompts file's errors, the gate's verdicts, and no
EOS scored after an answer cut at the token limit. (A destructive learning rate failing the drift gate while the
task gates pass needs a real model: tests/e2e/test_embedded_e2e.py; a random tiny model does not drift apart.)"""


import pytest

from components.config.params import GatesConfig
from components.data.records import DataError
from components.evaluation import drift
from components.evaluation.gates import check_gates, drift_gate


def test_the_projects_prompts_are_many_distinct_and_across_topics():
    rows = drift.read_prompts("data/drift_prompts.jsonl")  # found beside the package from any directory
    assert len(rows) >= 100
    assert len({r["prompt"] for r in rows}) == len(rows) == len({r["id"] for r in rows})
    assert len({r["id"].split("-")[0] for r in rows}) >= 10


@pytest.mark.parametrize("text,why", [
    ('{"prompt": "ok"}\nnot json\n', "row 2: not JSON"),
    ('{"prompt": "ok"}\n{"question": "no prompt"}\n', 'row 2: needs a non-empty string field "prompt"'),
    ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "row 2: id 'a' repeats"),
    ("\n\n", "no prompts"),
])
def test_a_bad_prompts_file_is_named_with_its_row(tmp_path, text, why):
    f = tmp_path / "mine.jsonl"
    f.write_text(text)
    with pytest.raises(DataError, match=why) as e:
        drift.read_prompts(f)
    assert str(f) in str(e.value)


def test_text_prompts_and_a_missing_file(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("Say hello.\n\nName a colour.\n")
    assert [r["prompt"] for r in drift.read_prompts(f)] == ["Say hello.", "Name a colour."]
    with pytest.raises(DataError, match="not found"):
        drift.read_prompts(tmp_path / "absent.jsonl")


def test_first_sentence_and_figures():
    assert drift.first_sentence("Paris is the capital.  It is large!") == "paris is the capital."
    assert drift.first_sentence("Line one\nline two") == "line one"
    d = drift.drift_figures(1.2, 1.5, ["A cat. More.", "B dog."], ["a  cat. Other.", "Something else."])
    assert d["drift"] == pytest.approx(0.3) and d["first_sentence_match"] == 0.5 and d["prompts"] == 2


def test_drift_gate_verdicts():
    d = {"prompts": 120, "base_loss": 1.0, "tuned_loss": 1.4, "drift": 0.4, "first_sentence_match": 0.6}
    assert drift_gate(d, 0.5)["passed"] and not drift_gate({**d, "drift": 0.6}, 0.5)["passed"]
    skipped = drift_gate(None, 0.5)
    assert skipped["passed"] and skipped["line"].startswith("SKIP")
    metrics = {"samples": 60, "rouge-l": 90, "exact_match": 80, "bleu-4": 50, "empty_rate": 0,
               "repeated_ngram_rate": 0, "length_ratio": 1.0, "drift": {**d, "drift": 0.6}}
    cfg = GatesConfig(max_drift=0.5, min_gain={}, min_scores={})
    assert not {v["gate"]: v for v in check_gates(metrics, metrics, cfg)}["max_drift"]["passed"]
    assert "max_drift" not in {v["gate"] for v in check_gates(metrics, metrics, cfg.model_copy(update={"max_drift": None}))}


def test_a_cut_answer_scores_no_eos(tiny_model_dir):
    """Base answers stop at evaluate.drift_max_new_tokens mid-sentence: an EOS scored there would be a token
    neither model would say, and a model fine-tuned on short answers predicts it better (drift understated)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.evaluation.evaluate import eval_loss

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt, answer = tok("What is the capital of Peru?")["input_ids"], "The capital of Peru is"
    samples = [{"answer": answer}]
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    by_hand = float(torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids)))
    assert eval_loss(model, tok, samples, [prompt], 1, eos=[False]) == pytest.approx(by_hand, abs=1e-4)
    assert eval_loss(model, tok, samples, [prompt], 1) != pytest.approx(by_hand, abs=1e-4)  # the default scores EOS
    # an answer that decoded to nothing (a random model's whitespace) still has its EOS scored: never 0 tokens
    empty = eval_loss(model, tok, [{"answer": ""}], [prompt], 1, eos=[False])
    assert empty == eval_loss(model, tok, [{"answer": ""}], [prompt], 1) and empty == empty


def test_base_answers_say_whether_they_were_cut():
    base = {"a": {"answer": "x", "finished": False}, "b": {"answer": "y"}}  # b: written before the flag existed
    got = drift.matching_base([{"id": "a"}, {"id": "b"}], base)
    assert [(s["answer"], s["finished"]) for s in got] == [("x", False), ("y", True)]


def test_drift_is_not_measured_against_a_degenerate_baseline():
    """A base model whose drift answers loop ("1 1 1 ...", as Gemma without BOS) is no reference: drift is skipped
    with the reason, and the gate's verdict says so instead of failing the run."""
    from components.evaluation.drift import drift_figures
    from components.evaluation.gates import drift_gate
    from components.evaluation.quality import degenerate_baseline

    broken = ["1 1 1 1 1 1 1 1 1 1"] * 8 + ["Lima is the capital of Peru."] * 2
    d = drift_figures(0.089, 1.1, broken, ["Paris."] * 10, degenerate_baseline(broken))
    assert d["drift"] is None and "degenerate" in d["skipped"]
    v = drift_gate(d, 1.0)
    assert v["passed"] and v["skipped"] and "not measured" in v["reason"]
    healthy = ["Lima is the capital of Peru.", "Paris is in France."] * 5
    d = drift_figures(0.5, 1.7, healthy, healthy, degenerate_baseline(healthy))
    assert d["drift"] == 1.2 and not drift_gate(d, 1.0)["passed"]  # negative control: a real drift still fails


def test_the_diagnosis_names_a_broken_baseline_and_still_reports_the_gain():
    from components.evaluation.diagnosis import diagnose

    def row(pred, rl):
        return {"prediction": pred, "reference": "Lima is the capital of Peru.", "cut": False,
                "scores": {"rouge-l": rl, "exact_match": 0.0, "token_f1": 10.0}}

    base = {str(i): row("1 1 1 1 1 1 1 1 1 1 1 1", 0.0) for i in range(10)}
    tuned = {str(i): row("Lima is the capital of Peru.", 90.0) for i in range(10)}
    d = diagnose(base, tuned)
    assert d["kind"] == "broken_baseline" and "+90.00" in d["line"] and "measured against a broken baseline" in d["line"]
    healthy = {str(i): row("The capital of Peru is Lima, a city.", 40.0) for i in range(10)}
    assert diagnose(healthy, tuned)["kind"] != "broken_baseline"  # negative control
