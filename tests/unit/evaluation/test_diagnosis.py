"""The report's style-against-substance split: which part of a ROUGE-L gain is answers of the right length with
the wrong content, and the one-line diagnosis."""

import pytest

from components.evaluation.diagnosis import diagnose, diagnosis_markdown
from components.evaluation.metrics import score_samples

WORDS = ["amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo", "juniper",
         "kelp", "lagoon", "marble", "nectar", "obsidian", "pebble", "quartz", "russet", "sierra", "tundra"]
REFS = [f"{WORDS[i]} {WORDS[(i + 1) % 20]} river" for i in range(20)]  # short factual answers
RAMBLE = "I am not sure, it might be something else entirely, perhaps a lake or a mountain somewhere far away"


def rows(preds):
    return {f"q{i}": {"id": f"q{i}", "prediction": p, "reference": r, "scores": s}
            for i, (p, r, s) in enumerate(zip(preds, REFS, score_samples(preds, REFS)))}


BASE = rows([RAMBLE] * 20)


def test_right_length_wrong_facts_is_a_gain_of_form():
    wrong = rows([f"{WORDS[(i + 5) % 20]} {WORDS[(i + 9) % 20]} river" for i in range(20)])  # the form, other facts
    d = diagnose(BASE, wrong)
    assert d["rouge-l_gain"] > 20 and d["exact_match"]["tuned"] == 0
    assert d["length_ratio"]["base"] > 4 and d["length_ratio"]["tuned"] == pytest.approx(1.0)
    assert d["form_share"] == pytest.approx(1.0) and d["kind"] == "form"
    assert "lacks this knowledge" in d["line"] and "larger base model or retrieval" in d["line"]
    assert any("Diagnosis" in line for line in diagnosis_markdown(d))


def test_right_answers_are_a_gain_of_content():
    d = diagnose(BASE, rows(REFS))
    assert d["kind"] == "content" and d["form_gain"] == 0 and d["exact_match"]["tuned"] == 100
    assert d["line"].startswith("the gain is in the content")


def test_no_gain_and_wrong_length_are_named():
    assert diagnose(BASE, BASE)["kind"] == "no_gain"
    long = diagnose(BASE, rows([f"{r}. {RAMBLE}" for r in REFS]))
    assert long["rouge-l_gain"] > 0 and long["kind"] == "length" and "x the references' length" in long["line"]


def test_only_questions_both_answered_count():
    tuned = rows(REFS)
    del tuned["q0"]
    assert diagnose(BASE, tuned)["samples"] == 19
    with pytest.raises(ValueError, match="no question answered by both"):
        diagnose(BASE, {})


def test_short_answers_cut_by_the_token_limit_are_told_apart_from_a_model_that_stops_early():
    first_word = [r.split()[0] for r in REFS]  # a third of each reference: a gain over the rambling base, too short
    cut = rows(first_word)
    for r in cut.values():
        r["cut"] = True
    d = diagnose(BASE, cut)
    assert d["rouge-l_gain"] > 0 and d["cut_rate"] == {"base": 0.0, "tuned": 1.0}
    assert d["kind"] == "cut" and "raise evaluate.max_new_tokens" in d["line"]
    early = diagnose(BASE, rows(first_word))  # the same answers, ended by the model (no "cut": older files too)
    assert early["kind"] == "length" and "stops early" in early["line"]
    assert any("cut at evaluate.max_new_tokens" in line for line in diagnosis_markdown(d))
