import json

import pytest

from components.evaluation.gates import GateFailed, check_gates, run_gate
from components.config.params import GatesConfig

GOOD = {"rouge-l": 70.0, "bleu-4": 60.0, "exact_match": 60.0, "empty_rate": 0.0, "repeated_ngram_rate": 0.0,
        "length_ratio": 1.0, "samples": 60}
BASE = {"rouge-l": 50.0, "bleu-4": 40.0, "exact_match": 0.0, "empty_rate": 0.0, "repeated_ngram_rate": 0.0,
        "length_ratio": 2.5, "samples": 60}


def rows(scores: list[float], em: list[float] | None = None, ids=None) -> dict:
    em = em or [100.0 if s >= 60 else 0.0 for s in scores]
    ids = ids or [f"q{i}" for i in range(len(scores))]
    return {i: {"id": i, "prediction": "an answer", "reference": "an answer",
                "scores": {"rouge-l": s, "exact_match": e, "token_f1": e}} for i, s, e in zip(ids, scores, em)}


def by_name(verdicts):
    return {v["gate"]: v for v in verdicts}


def test_good_run_passes_every_gate():
    v = by_name(check_gates(GOOD, BASE, GatesConfig(), {"ok": True}, rows([70, 72, 68, 71] * 15), rows([50, 52, 49, 48] * 15)))
    assert all(x["passed"] for x in v.values())
    assert v["gain_rouge-l"]["interval"]["low"] > 0 and v["gain_exact_match"]["interval"]["low"] > 0
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
    cfg = GatesConfig(min_scores={}, min_gain={"rouge-l": 10}, min_samples=1)
    v = by_name(check_gates(tuned, base, cfg, None, noisy_t, noisy_b))
    assert v["gain_rouge-l"]["interval"]["low"] < 0 and not v["gain_rouge-l"]["passed"]
    cfg = cfg.model_copy(update={"require_significant_gain": False})
    assert by_name(check_gates(tuned, base, cfg, None, noisy_t, noisy_b))["gain_rouge-l"]["passed"]


def test_no_regression_against_promoted_on_the_questions_both_answered():
    cfg = GatesConfig(min_scores={}, min_gain={}, max_regression=1.0, min_samples=1)
    worse = by_name(check_gates(GOOD, BASE, cfg, None, rows([60] * 10), rows([50] * 10), rows([65] * 10)))
    assert not worse["no_regression_rouge-l"]["passed"] and worse["no_regression_rouge-l"]["value"] == -5.0
    assert "on the 10 questions both answered" in worse["no_regression_rouge-l"]["line"]
    same = by_name(check_gates(GOOD, BASE, cfg, None, rows([65] * 10), rows([50] * 10), rows([65.5] * 10)))
    assert same["no_regression_rouge-l"]["passed"] and same["no_regression_exact_match"]["passed"]
    # rows added to the data: the promoted model's 10 questions are 10 of the tuned model's 20; ids, not positions,
    # pair them, so the 10 new (hard) questions cannot hide or fake a regression
    tuned = rows([65] * 10 + [0] * 10, ids=[f"q{i}" for i in range(20)])
    promoted = rows([65] * 10, ids=[f"q{i}" for i in range(10)])
    v = by_name(check_gates(GOOD, BASE, cfg, None, tuned, rows([50] * 20), promoted))
    assert v["no_regression_rouge-l"]["passed"] and v["no_regression_rouge-l"]["interval"]["n"] == 10
    lost_facts = rows([65] * 10, em=[0.0] * 10)  # same wording, no fact right: exact match regresses
    assert not by_name(check_gates(GOOD, BASE, cfg, None, lost_facts, rows([50] * 10), rows([65] * 10)))[
        "no_regression_exact_match"]["passed"]
    other = by_name(check_gates(GOOD, BASE, cfg, None, rows([60] * 4), rows([50] * 4), rows([65] * 4, ids=list("abcd"))))
    assert other["no_regression_rouge-l"]["line"].startswith("SKIP") and "no shared question" in other["no_regression_rouge-l"]["line"]


def test_one_question_fails_min_samples_and_cannot_be_significant():
    one_t, one_b = rows([100.0]), rows([0.0])
    tuned, base = {**GOOD, "rouge-l": 100.0, "exact_match": 100.0, "samples": 1}, {**BASE, "samples": 1}
    v = by_name(check_gates(tuned, base, GatesConfig(), None, one_t, one_b))
    assert not v["min_samples"]["passed"] and v["min_samples"]["line"].startswith("FAIL min_samples: 1 scored")
    assert not v["gain_rouge-l"]["passed"]  # a one-sample interval has zero width: it proves nothing
    assert by_name(check_gates(tuned, base, GatesConfig(min_samples=1, require_significant_gain=False), None, one_t,
                               one_b))["min_samples"]["passed"]


def _wrong_fact(answer: str, capitals: list[str], symbols: list[str]) -> str:
    """The answer with its fact changed and its template kept: another capital (or continent), symbol or number."""
    import re

    for c in sorted(capitals, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", answer):
            other = capitals[(capitals.index(c) + 7) % len(capitals)]
            return re.sub(rf"(?<!\w){re.escape(c)}(?!\w)", other, answer)
    words = answer.rstrip(".").split(" ")
    for k, w in enumerate(words):
        if re.fullmatch(r"\d[\d,]*", w):
            words[k] = f"{int(w.replace(',', '')) + 7:,}"
            return " ".join(words) + "."
    for k, w in enumerate(words):
        if w in symbols:
            words[k] = symbols[(symbols.index(w) + 7) % len(symbols)]
            return " ".join(words) + "."
    raise AssertionError(f"no fact found in {answer!r}")


def test_template_kept_with_wrong_facts_fails_the_default_gates_on_the_embedded_data():
    """The embedded test split answered in the right words with the wrong facts: ROUGE-L stays high (it judges
    wording), exact match collapses, and the default gates fail; the right answers pass them."""
    from components.config.params import PrepareConfig
    from components.data.datagen import generate_rows
    from components.data.facts import countries, elements
    from components.data.prepare import split_rows
    from components.evaluation.metrics import score_samples

    _, test = split_rows(generate_rows(), PrepareConfig().split_seed, PrepareConfig().test_fraction)
    capitals = [c for _, c, _ in countries()] + sorted({k for _, _, k in countries()})  # capitals, continents
    symbols = [s for _, s, _ in elements()]
    refs = [r["answer"] for r in test]
    base_preds = ["I do not know."] * len(refs)

    def judged(preds):
        per = score_samples(preds, refs)
        metrics = {k: sum(p[k] for p in per) / len(per) for k in per[0]}
        metrics.update(samples=len(per), empty_rate=0.0, repeated_ngram_rate=0.0,
                       length_ratio=sum(map(len, preds)) / sum(map(len, refs)))
        return metrics, {r["id"]: {"id": r["id"], "prediction": p, "reference": a, "scores": s}
                         for r, p, a, s in zip(test, preds, refs, per)}

    base, base_rows = judged(base_preds)
    wrong, wrong_rows = judged([_wrong_fact(a, capitals, symbols) for a in refs])
    right, right_rows = judged(refs)
    assert wrong["rouge-l"] > 75 and wrong["exact_match"] == 0  # the wording fools ROUGE-L, not exact match
    v = by_name(check_gates(wrong, base, GatesConfig(), {"ok": True}, wrong_rows, base_rows))
    assert v["min_rouge-l"]["passed"] and not v["min_exact_match"]["passed"] and not v["gain_exact_match"]["passed"]
    assert all(x["passed"] for x in check_gates(right, base, GatesConfig(), {"ok": True}, right_rows, base_rows))


def test_failed_gate_writes_reports_withdraws_stale_outputs_and_raises(tmp_path):
    for name, m, scores in (("b", BASE, [50] * 60), ("t", {**GOOD, "rouge-l": 52.0}, [52] * 60)):
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
