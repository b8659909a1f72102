"""Signals beyond the headline metrics: degeneration of generated text and paired bootstrap intervals."""

from __future__ import annotations

import numpy as np

from components.evaluation.metrics import answer_tokens


def repeated_ngram_rate(text: str, n: int = 3, language: str = "en") -> float:
    """Share of an answer's n-grams that repeat an earlier n-gram of the same answer (0 = no loops)."""
    toks = answer_tokens(text, language)
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def degeneration(predictions: list[str], references: list[str], language: str = "en") -> dict[str, float]:
    """Empty-answer rate, mean repeated 3-gram rate, and generated/reference length ratio (characters)."""
    n = max(len(predictions), 1)
    ref_chars = sum(len(r) for r in references) or 1
    return {
        "empty_rate": round(sum(not p.strip() for p in predictions) / n, 4),
        "repeated_ngram_rate": round(sum(repeated_ngram_rate(p, 3, language) for p in predictions) / n, 4),
        "length_ratio": round(sum(len(p) for p in predictions) / ref_chars, 4),
    }


def paired_bootstrap(a: list[float], b: list[float], samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired samples with a percentile-bootstrap 95% interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        raise ValueError("no paired samples")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(d.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "n": int(d.size)}


DEGENERATE_LOOP = 0.5    # an answer whose 3-grams repeat at least this much loops ("1 1 1 1 ...")
DEGENERATE_SHARE = 0.5   # a baseline with at least this share of empty or looping answers is broken


def degenerate_baseline(predictions: list[str], language: str = "en") -> dict:
    """Whether a model's answers are degenerate (empty or looping) as a whole, e.g. a base model fed no BOS.

    A gain or a drift measured against such answers measures the baseline's breakage: reports say so, and drift is
    not measured against them."""
    n = max(len(predictions), 1)
    empty = sum(not p.strip() for p in predictions)
    looping = sum(bool(p.strip()) and repeated_ngram_rate(p, 3, language) >= DEGENERATE_LOOP for p in predictions)
    share = (empty + looping) / n
    out = {"answers": len(predictions), "empty": empty, "looping": looping, "share": round(share, 4),
           "degenerate": bool(predictions) and share >= DEGENERATE_SHARE}
    out["line"] = (f"{empty + looping} of {len(predictions)} answers are empty ({empty}) or loop on repeated words "
                   f"({looping}): the baseline is broken (a missing BOS or a wrong chat template is the usual cause; "
                   "see `peftpipe model inspect`)") if out["degenerate"] else ""
    return out
