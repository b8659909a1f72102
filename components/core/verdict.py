"""One shape for every check that can stop a model: training health, the metric gates, merge parity, export
parity, the quantization check of each variant, and the promotion check.

A verdict is a plain dict (it goes into JSON reports as is) with these keys, always:

- `gate`: the check's own name (`min_rouge-l`, `merge_parity`, `int8`, ...)
- `check`: which of the six kinds it is (a key of CHECKS)
- `passed`, `skipped`: skipped verdicts pass (nothing to compare with)
- `value`, `threshold`: what was measured and what it had to meet (None when there is no number)
- `reason`: one sentence with the numbers
- `enforced`: what a failure does ("stops the run", "keeps the variant out of the bundle", ...)
- `line`: `PASS|FAIL|SKIP gate: reason`, the line the stages print

A check may add detail keys after these (the gain gates' bootstrap `interval`).
"""

from __future__ import annotations

STOPS_THE_RUN = "stops the run"
# each kind of check and what its failure does
CHECKS = {
    "training_health": STOPS_THE_RUN,
    "metric": STOPS_THE_RUN,
    "merge_parity": STOPS_THE_RUN,
    "export_parity": STOPS_THE_RUN,
    "quantization": "keeps the variant out of the bundle",
    "promotion": "refuses the promotion",
}
KEYS = ("gate", "check", "passed", "skipped", "value", "threshold", "reason", "enforced", "line")


def verdict(check: str, gate: str, passed: bool, value, threshold, reason: str, *, skipped: bool = False,
            **detail) -> dict:
    """The verdict of `gate`, one check of kind `check`; `detail` keys come after the common ones."""
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; checks: {', '.join(CHECKS)}")
    passed = bool(passed)
    word = "SKIP" if skipped else "PASS" if passed else "FAIL"
    return {"gate": gate, "check": check, "passed": passed, "skipped": bool(skipped), "value": value,
            "threshold": threshold, "reason": reason, "enforced": CHECKS[check], "line": f"{word} {gate}: {reason}",
            **detail}


def word(v: dict) -> str:
    """PASS, FAIL or SKIP (also for a verdict written before `skipped` was always present)."""
    return v["line"].split(" ", 1)[0] if "line" in v else "SKIP" if v.get("skipped") else "PASS" if v["passed"] else "FAIL"
