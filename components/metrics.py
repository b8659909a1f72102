"""BLEU-4 and ROUGE-1/2/L as ChatGLM's P-Tuning v2 evaluation (and LLaMA-Factory) compute them.

Per sample: ROUGE F-scores from rouge-chinese on jieba tokens joined by spaces; BLEU-4 from
nltk's sentence_bleu on characters with SmoothingFunction().method3; each x100 and rounded to
4 decimals, then averaged over samples. An empty prediction or reference scores 0.
"""

from __future__ import annotations

import logging
import re
from statistics import fmean

METRIC_NAMES = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    """Scores of one prediction against one reference, x100."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba = _jieba()
    hyp = " ".join(jieba.cut(prediction))
    ref = " ".join(jieba.cut(reference))
    if not hyp.split() or not ref.split():
        rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    else:
        result = Rouge().get_scores(hyp, ref)[0]
        rouge = {k: round(v["f"] * 100, 4) for k, v in result.items()}
    if prediction and reference:
        bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)
    else:
        bleu = 0.0
    return {"bleu-4": round(bleu * 100, 4), **rouge}


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean of the per-sample scores, plus exact match (normalised, x100)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no samples to score")
    per = [sample_scores(p, r) for p, r in zip(predictions, references)]
    out = {name: round(fmean(s[name] for s in per), 4) for name in METRIC_NAMES}
    out["exact_match"] = round(100 * fmean(_normalise(p) == _normalise(r) for p, r in zip(predictions, references)), 4)
    return out
