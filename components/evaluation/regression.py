"""Paired comparisons of per-question scores: one model against another on the questions both answered.

Questions are paired by their stable id, not their position, so rows added to (or dropped from) the data
between two runs can neither hide nor fake a difference. The gate's `no_regression` (against `gates.promoted`)
and the registry's promotion check (against the version in production) both judge with `paired_regression`.
"""

from __future__ import annotations

from components.core.layout import PER_SAMPLE_METRICS, REGRESSION_METRICS
from components.evaluation.quality import paired_bootstrap

BOOTSTRAP_SAMPLES = 1000


def paired(a: dict[str, dict], b: dict[str, dict], metric: str, samples: int = BOOTSTRAP_SAMPLES) -> dict | None:
    """Paired bootstrap of a - b on `metric` over the questions (stable ids) both were scored on:
    {mean, low, high, n}; None when no question is shared (or the metric is not scored per question)."""
    if metric not in PER_SAMPLE_METRICS:
        return None
    ids = sorted(i for i in set(a) & set(b) if metric in a[i]["scores"] and metric in b[i]["scores"])
    if not ids:
        return None
    return paired_bootstrap([a[i]["scores"][metric] for i in ids], [b[i]["scores"][metric] for i in ids], samples)


def paired_regression(candidate: dict[str, dict], reference: dict[str, dict], max_regression: float,
                      samples: int = BOOTSTRAP_SAMPLES, metrics: tuple[str, ...] = REGRESSION_METRICS) -> dict[str, dict | None]:
    """For each metric: {interval: the candidate's paired difference to the reference ({mean, low, high, n}),
    passed: the mean at most `max_regression` points below 0}, or None when the two share no scored question."""
    out: dict[str, dict | None] = {}
    for metric in metrics:
        ci = paired(candidate, reference, metric, samples)
        out[metric] = None if ci is None else {"interval": ci, "passed": ci["mean"] >= -max_regression}
    return out
