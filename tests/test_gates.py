import json

import pytest

from components.evaluation.gates import GateFailed, check_gates, run_gate
from components.core.config import GatesConfig

GOOD = {"rouge-l": 70.0, "bleu-4": 60.0, "empty_rate": 0.0, "repeated_ngram_rate": 0.0, "length_ratio": 1.0}
BASE = {"rouge-l": 50.0, "bleu-4": 40.0, "empty_rate": 0.0, "repeated_ngram_rate": 0.0, "length_ratio": 2.5}


def rows(scores: list[float]) -> dict:
    return {str(i): {"id": str(i), "scores": {"rouge-l": s}} for i, s in enumerate(scores)}


def by_name(verdicts):
    return {v["gate"]: v for v in verdicts}


def test_good_run_passes_every_gate():
    v = by_name(check_gates(GOOD, BASE, GatesConfig(), {"ok": True}, rows([70, 72, 68, 71] * 5), rows([50, 52, 49, 48] * 5)))
    assert all(x["passed"] for x in v.values())
    assert v["gain_rouge-l"]["interval"]["low"] > 0
    assert v["no_regression"]["line"].startswith("SKIP")


def test_each_gate_fails_with_its_numbers():
    bad = {**GOOD, "rouge-l": 55.0, "empty_rate": 0.5, "repeated_ngram_rate": 0.6, "length_ratio": 3.0}
    health = {"ok": False, "reason": "non-finite loss", "step": 7, "value": float("nan"), "best_step": 5}
    v = by_name(check_gates(bad, BASE, GatesConfig(), health))
    assert not any(v[g]["passed"] for g in ("training_health", "min_rouge-l", "gain_rouge-l", "empty_rate",
                                            "repeated_ngrams", "length_ratio"))
    assert v["training_health"]["line"] == ("FAIL training_health: non-finite loss at step 7 (loss nan); kept the best step 5")
    assert v["min_rouge-l"]["line"] == "FAIL min_rouge-l: rouge-l = 55.00 (needs >= 60)"
    assert "+5.00 (needs >= 10)" in v["gain_rouge-l"]["line"]


def test_gain_must_be_significant_when_required():
    noisy_t, noisy_b = rows([100, 0, 100, 0, 100, 40]), rows([0, 100, 0, 100, 0, 0])  # mean gain +23, wide interval
    tuned = {**GOOD, "rouge-l": 56.67}
    base = {**BASE, "rouge-l": 33.33}
    cfg = GatesConfig(min_scores={}, min_gain={"rouge-l": 10})
    v = by_name(check_gates(tuned, base, cfg, None, noisy_t, noisy_b))
    assert v["gain_rouge-l"]["interval"]["low"] < 0 and not v["gain_rouge-l"]["passed"]
    cfg = cfg.model_copy(update={"require_significant_gain": False})
    assert by_name(check_gates(tuned, base, cfg, None, noisy_t, noisy_b))["gain_rouge-l"]["passed"]


def test_no_regression_against_promoted():
    cfg = GatesConfig(min_scores={}, min_gain={}, max_regression=1.0)
    worse = by_name(check_gates(GOOD, BASE, cfg, None, rows([60] * 10), rows([50] * 10), rows([65] * 10)))
    assert not worse["no_regression"]["passed"] and worse["no_regression"]["value"] == -5.0
    same = by_name(check_gates(GOOD, BASE, cfg, None, rows([65] * 10), rows([50] * 10), rows([65.5] * 10)))
    assert same["no_regression"]["passed"]


def test_failed_gate_writes_reports_withdraws_stale_outputs_and_raises(tmp_path):
    for name, m, scores in (("b", BASE, [50] * 8), ("t", {**GOOD, "rouge-l": 52.0}, [52] * 8)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
        (tmp_path / name / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(scores).values()))
    stale = tmp_path / "bundle"
    stale.mkdir()
    with pytest.raises(GateFailed, match=r"min_rouge-l: rouge-l = 52.00 \(needs >= 60\)"):
        run_gate(tmp_path / "b", tmp_path / "t", tmp_path / "train", GatesConfig(), tmp_path / "g", withdraw=(stale,))
    report = json.loads((tmp_path / "g" / "gates.json").read_text())
    assert report["passed"] is False and not stale.exists()
    assert "| min_rouge-l | FAIL | 52 | 60.0 |" in (tmp_path / "g" / "gates.md").read_text()
