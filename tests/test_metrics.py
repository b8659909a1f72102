"""Parity with the ChatGLM P-Tuning v2 / LLaMA-Factory metric definitions."""

import pytest

from components.metrics import corpus_scores, sample_scores


def reference_formula(pred: str, label: str) -> dict:
    """ChatGLM's compute_metrics, written out independently (with LLaMA-Factory's empty-text guard)."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    hyp, ref = list(jieba.cut(pred)), list(jieba.cut(label))
    if len(" ".join(hyp).split()) == 0 or len(" ".join(ref).split()) == 0:
        scores = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
    else:
        scores = Rouge().get_scores(" ".join(hyp), " ".join(ref))[0]
    out = {k: round(v["f"] * 100, 4) for k, v in scores.items()}
    bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3) if pred and label else 0.0
    out["bleu-4"] = round(bleu * 100, 4)
    return out


PAIRS = [
    ("The capital of France is Paris.", "The capital of France is Paris."),
    ("Paris is the capital.", "The capital of France is Paris."),
    ("", "The capital."),
    ("The capital.", ""),
    ("...", "Yes."),
    ("北京是中国的首都。", "中国的首都是北京。"),
    ("我不知道", "中国的首都是北京。"),
    ("word " * 300, "word"),
]


@pytest.mark.parametrize("pred, label", PAIRS)
def test_matches_reference_formula(pred, label):
    ours, ref = sample_scores(pred, label), reference_formula(pred, label)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-6)


def test_known_values():
    """Values worked out by hand: unigram F 2*(4/5)*(4/7)/(4/5+4/7) = 66.67, LCS 2 -> 33.33."""
    s = sample_scores("Paris is the capital.", "The capital of France is Paris.")
    assert s["rouge-1"] == pytest.approx(66.6667, abs=1e-4)
    assert s["rouge-2"] == 0.0
    assert s["rouge-l"] == pytest.approx(33.3333, abs=1e-4)
    assert s["bleu-4"] == pytest.approx(45.5667, abs=1e-4)
    zh = sample_scores("北京是中国的首都。", "中国的首都是北京。")
    assert zh["rouge-1"] == 100.0 and zh["rouge-2"] == pytest.approx(40.0, abs=1e-4)


def test_identical_is_100_and_empty_is_0():
    assert sample_scores("Same answer.", "Same answer.") == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}
    assert set(sample_scores("", "x y").values()) == {0.0}


def test_corpus_scores_average_and_exact_match():
    preds = ["The capital of France is Paris.", "Paris is the capital."]
    refs = ["The capital of France is Paris.", "The capital of France is Paris."]
    c = corpus_scores(preds, refs)
    assert c["rouge-l"] == pytest.approx((100 + 33.3333) / 2, abs=1e-4)
    assert c["exact_match"] == 50.0
    with pytest.raises(ValueError):
        corpus_scores(["a"], [])
