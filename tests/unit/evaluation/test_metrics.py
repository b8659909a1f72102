"""Parity with the ChatGLM P-Tuning v2 / LLaMA-Factory metric definitions."""

import pytest

from components.evaluation.metrics import corpus_scores, sample_scores


def reference_formula(pred: str, label: str) -> dict:
    """ChatGLM's ptuning/main.py compute_metrics for one pair, written out independently: jieba on the text as it
    is (no lower-casing), rouge_chinese on the tokens joined by spaces, nltk BLEU-4 on characters with method3;
    with LLaMA-Factory's guard for empty text (ChatGLM's script raises there)."""
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
    ("the capital of france is paris.", "The capital of France is Paris."),  # case differs: 57.14 in ChatGLM's
    ("Paris is the capital.", "The capital of France is Paris."),
    ("PARIS, France!", "Paris, France."),
    ("", "The capital."),
    ("The capital.", ""),
    ("...", "Yes."),
    ("!?", "..."),
    ("北京是中国的首都。", "中国的首都是北京。"),
    ("我不知道", "中国的首都是北京。"),
    ("北京 is the capital of 中国.", "The capital of China is 北京."),
    ("word " * 300, "word"),
]


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("pred, label", PAIRS)
def test_chatglm_style_matches_the_reference_formula(pred, label, language):
    """The default style is ChatGLM's compute_metrics to 1e-6, whatever the language (it only changes EM/F1)."""
    ours, ref = sample_scores(pred, label, language, "chatglm"), reference_formula(pred, label)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-6), k


def test_case_counts_in_the_chatglm_style_and_not_in_the_normalised_one():
    pred, label = "the capital of france is paris.", "The capital of France is Paris."
    assert sample_scores(pred, label)["rouge-l"] == pytest.approx(57.1429, abs=1e-4)  # ChatGLM's own figure
    assert sample_scores(pred, label, style="normalised")["rouge-l"] == pytest.approx(100.0)
    assert sample_scores("Paris!", "paris", style="normalised") == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 0.0,
                                                                   "rouge-l": 100.0}
    with pytest.raises(ValueError, match="metric_style 'lower'"):
        sample_scores("a", "a", style="lower")


def test_a_rouge_that_drops_cjk_would_fail_the_chinese_parity():
    """rouge-score's tokenizer keeps only [a-z0-9]: on Chinese it scores 0 where the reference formula scores 100."""
    from rouge_score import rouge_scorer

    pred, label = "北京是中国的首都。", "中国的首都是北京。"
    dropped = rouge_scorer.RougeScorer(["rouge1"]).score(label, pred)["rouge1"].fmeasure * 100
    assert dropped != pytest.approx(reference_formula(pred, label)["rouge-1"], abs=1e-6)
    assert dropped == 0.0
    assert sample_scores(pred, label, "zh")["rouge-1"] == pytest.approx(100.0)


def test_token_f1_exact_match_and_sacrebleu():
    from components.evaluation.metrics import corpus_bleu, token_f1

    assert token_f1("The capital is Lima.", "Lima is the capital") == 100.0
    assert token_f1("Lima", "The capital of Peru is Lima.") == pytest.approx(100 * 2 * 1 * 0.2 / 1.2, abs=1e-4)
    assert token_f1("北京", "首都北京", "zh") == pytest.approx(100 * 2 * 1 * 0.5 / 1.5, abs=1e-4)
    assert token_f1("", "") == 100.0 and token_f1("", "x") == 0.0
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert corpus_bleu(["北京是中国的首都"], ["北京是中国的首都"], "zh") == pytest.approx(100.0)


def test_known_values():
    """Values worked out by hand: unigram F 2*(4/5)*(4/7)/(4/5+4/7) = 66.67, LCS 2 -> 33.33."""
    s = sample_scores("Paris is the capital.", "The capital of France is Paris.", "zh")
    assert s["rouge-1"] == pytest.approx(66.6667, abs=1e-4)
    assert s["rouge-2"] == 0.0
    assert s["rouge-l"] == pytest.approx(33.3333, abs=1e-4)
    assert s["bleu-4"] == pytest.approx(45.5667, abs=1e-4)
    zh = sample_scores("北京是中国的首都。", "中国的首都是北京。", "zh")
    assert zh["rouge-1"] == 100.0 and zh["rouge-2"] == pytest.approx(40.0, abs=1e-4)


def test_identical_is_100_and_empty_is_0():
    assert sample_scores("Same answer.", "Same answer.") == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}
    assert set(sample_scores("", "x y").values()) == {0.0}


def test_corpus_scores_average_and_exact_match():
    preds = ["The capital of France is Paris.", "Paris is the capital."]
    refs = ["The capital of France is Paris.", "The capital of France is Paris."]
    c = corpus_scores(preds, refs, "zh")
    assert c["rouge-l"] == pytest.approx((100 + 33.3333) / 2, abs=1e-4)
    assert c["exact_match"] == 50.0
    with pytest.raises(ValueError):
        corpus_scores(["a"], [])


def test_degeneration_and_bootstrap():
    from components.evaluation.quality import degeneration, paired_bootstrap, repeated_ngram_rate

    assert repeated_ngram_rate("x y z x y z x y z") == pytest.approx(1 - 3 / 7)
    assert repeated_ngram_rate("The capital of Peru is Lima.") == 0.0
    d = degeneration(["", "x y z x y z x y z", "Lima."], ["a", "b", "Lima."])
    assert d["empty_rate"] == pytest.approx(1 / 3, abs=1e-4) and d["repeated_ngram_rate"] > 0.1
    assert d["length_ratio"] == pytest.approx(22 / 7, abs=1e-4)
    ci = paired_bootstrap([3.0] * 50, [1.0] * 50)
    assert ci == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 50}
    wide = paired_bootstrap([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1], samples=2000, seed=1)
    assert wide["low"] < 0 < wide["high"]
    assert paired_bootstrap([1, 0, 1], [0, 0, 1], seed=3) == paired_bootstrap([1, 0, 1], [0, 0, 1], seed=3)


def test_multiple_references_take_the_best_match():
    from components.evaluation.metrics import corpus_bleu, score_samples

    one = score_samples(["The capital is Lima."], ["Lima is in Peru."])[0]
    best = score_samples(["The capital is Lima."], [["Lima is in Peru.", "The capital is Lima."]])[0]
    assert best["rouge-l"] == 100.0 and one["rouge-l"] < 100.0 and best["exact_match"] == 100.0
    assert corpus_bleu(["the cat sat on the mat"], [["a dog", "the cat sat on the mat"]]) == pytest.approx(100.0)
