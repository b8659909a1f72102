"""The promotion policy: a version enters a stage only if its gates passed and it does not regress against the
version in production by more than `gates.max_regression` points.

With both bundles' per-question predictions the comparison is paired on the questions both answered (the same
`paired_regression` the gate's `no_regression` uses); a version without them is compared on its registered means.
Each rule gives a verdict (components/core/verdict.py); a failed one refuses the promotion.
"""

from __future__ import annotations

from components.core.verdict import verdict
from components.evaluation.regression import paired_regression


def promotion_verdicts(candidate: dict, production: dict | None, max_regression: float,
                       candidate_rows: dict | None = None, production_rows: dict | None = None) -> list[dict]:
    """The promotion check's verdicts on `candidate` ({version, lineage}) against `production` (None: none yet).
    Rows are per-question predictions keyed by stable question id."""
    lin, name = candidate["lineage"], candidate["version"]
    gates = bool(lin.get("gates_passed"))
    out = [verdict("promotion", "gates_passed", gates, gates, True,
                   f"{name} {'passed' if gates else 'did not pass'} its quality gates")]
    if not production or production["version"] == name:
        why = "no version in production to compare with" if not production else f"{name} is the version in production"
        return out + [verdict("promotion", "no_regression", True, None, -max_regression, why, skipped=True)]
    prod_version, allowed = production["version"], f"at most {max_regression:g} points lower allowed"
    if set(candidate_rows or {}) & set(production_rows or {}):
        for metric, r in paired_regression(candidate_rows, production_rows, max_regression).items():
            if r is None:
                out.append(verdict("promotion", f"no_regression_{metric}", True, None, -max_regression,
                                   f"no shared question scored on {metric}", skipped=True))
                continue
            ci = r["interval"]
            out.append(verdict("promotion", f"no_regression_{metric}", r["passed"], ci["mean"], -max_regression,
                               f"{metric} {ci['mean']:+.2f} against production {prod_version} on the {ci['n']} "
                               f"questions both answered ({allowed})", interval=ci))
        return out
    prod = production["lineage"].get("metrics", {})
    for metric, value in lin.get("metrics", {}).items():
        if metric in prod:
            ok = not value < prod[metric] - max_regression
            out.append(verdict("promotion", f"no_regression_{metric}", ok, value, round(prod[metric] - max_regression, 4),
                               f"{metric} {value:.2f} {'against' if ok else 'regresses against'} production "
                               f"{prod_version} ({prod[metric]:.2f}; {allowed})"))
    return out


def check_promotion(candidate: dict, production: dict | None, max_regression: float,
                    candidate_rows: dict | None = None, production_rows: dict | None = None) -> list[str]:
    """Reasons a version may not be promoted: failed gates, or a regression against production beyond
    `max_regression` points. With both bundles' per-question predictions (keyed by stable question id) the
    comparison is on the questions both answered (ROUGE-L and exact match); else on the registered means."""
    return [v["reason"] for v in promotion_verdicts(candidate, production, max_regression, candidate_rows,
                                                     production_rows) if not v["passed"]]
