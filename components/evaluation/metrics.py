"""BLEU-4 and ROUGE-1/2/L as ChatGLM's P-Tuning v2 evaluation (and LLaMA-Factory) compute them.

Per sample: ROUGE F-scores from rouge-chinese on jieba tokens joined by spaces; BLEU-4 from
nltk's sentence_bleu on characters with SmoothingFunction().method3; each x100 and rounded to
4 decimals, then averaged over samples. An empty prediction or reference scores 0 (ChatGLM's
script raises there; LLaMA-Factory guards it the same way).

Two styles (`evaluate.metric_style`): "chatglm" (the default) is exactly that formula, case kept;
"normalised" first lower-cases and strips punctuation and English articles (SQuAD-style), so
"paris." and "Paris" agree. Every report names its style.
Secondary figures: corpus BLEU from sacrebleu, exact match and token F1 (SQuAD-style normalisation
in both styles; characters for Chinese).
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from statistics import fmean

ZH_PUNCT = "，。！？；：、“”‘’（）《》【】—…·「」『』"
STYLES = ("chatglm", "normalised")


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def styled(text: str, language: str = "en", style: str = "chatglm") -> str:
    """The text the reference metrics see: as it is (chatglm) or SQuAD-normalised (normalised)."""
    if style not in STYLES:
        raise ValueError(f"evaluate.metric_style {style!r}: choose from {', '.join(STYLES)}")
    return text if style == "chatglm" else normalise_answer(text, language)


def rouge_tokens(text: str, language: str = "en", style: str = "chatglm") -> str:
    """jieba tokens joined by spaces, as ChatGLM's compute_metrics builds them."""
    return " ".join(_jieba().cut(styled(text, language, style)))


def sample_scores(prediction: str, reference: str, language: str = "en", style: str = "chatglm") -> dict[str, float]:
    """BLEU-4 and ROUGE-1/2/L of one prediction against one reference, x100 (style "chatglm": the reference formula)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    prediction, reference = styled(prediction, language, style), styled(reference, language, style)
    hyp, ref = rouge_tokens(prediction, language), rouge_tokens(reference, language)
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


def normalise_answer(text: str, language: str = "en") -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no English articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation) | set(ZH_PUNCT))
    if language == "en":
        text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_tokens(text: str, language: str = "en") -> list[str]:
    norm = normalise_answer(text, language)
    return [c for c in norm if not c.isspace()] if language == "zh" else norm.split()


def token_f1(prediction: str, reference: str, language: str = "en") -> float:
    p, r = answer_tokens(prediction, language), answer_tokens(reference, language)
    if not p or not r:
        return float(p == r) * 100
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return round(100 * 2 * precision * recall / (precision + recall), 4)


def _one(p: str, r: str, language: str, style: str) -> dict[str, float]:
    s = sample_scores(p, r, language, style)
    s["exact_match"] = 100.0 * (normalise_answer(p, language) == normalise_answer(r, language))
    s["token_f1"] = token_f1(p, r, language)
    return s


def score_samples(predictions: list[str], references: list[str | list[str]], language: str = "en",
                  style: str = "chatglm") -> list[dict[str, float]]:
    """Per-sample scores: the four reference metrics, exact match and token F1.

    A sample with several references is scored against the one it matches best (highest ROUGE-L,
    then BLEU-4), as SQuAD-style evaluations take the best answer.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    out = []
    for p, r in zip(predictions, references):
        refs = [r] if isinstance(r, str) else list(r)
        out.append(max((_one(p, x, language, style) for x in refs), key=lambda s: (s["rouge-l"], s["bleu-4"])))
    return out


def corpus_bleu(predictions: list[str], references: list[str | list[str]], language: str = "en") -> float:
    """sacrebleu corpus BLEU; several references per sample become several reference streams."""
    import sacrebleu

    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    width = max(len(r) for r in refs)
    streams = [[r[min(k, len(r) - 1)] for r in refs] for k in range(width)]  # short lists repeat their last
    return round(sacrebleu.corpus_bleu(predictions, streams, tokenize="zh" if language == "zh" else "13a").score, 4)


def corpus_scores(predictions: list[str], references: list[str], language: str = "en",
                  style: str = "chatglm") -> dict[str, float]:
    """Means of the per-sample scores plus sacrebleu's corpus BLEU."""
    if not predictions:
        raise ValueError("no samples to score")
    per = score_samples(predictions, references, language, style)
    out = {name: round(fmean(s[name] for s in per), 4) for name in per[0]}
    out["sacrebleu"] = corpus_bleu(predictions, references, language)
    return out
