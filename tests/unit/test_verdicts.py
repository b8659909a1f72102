"""Every check that can stop a model (training health, metric gates, merge parity, export parity, the quantization
check, the promotion check) reports a verdict of one shape, and the run summary shows them all in one table.

The slow halves (a real merge forced to fail, a real int8 graph failing its check) are in
tests/unit/deploy/test_merge_export.py; here the verdicts are built from the reports those stages write.
"""

from __future__ import annotations

import json
import os

import pytest

# the common shape, spelled out here (not imported) so that a change to it fails these tests
SHAPE = {"gate", "check", "passed", "skipped", "value", "threshold", "reason", "enforced", "line"}
ENFORCED = {"training_health": "stops the run", "metric": "stops the run", "merge_parity": "stops the run",
            "export_parity": "stops the run", "quantization": "keeps the variant out of the bundle",
            "promotion": "refuses the promotion"}


def assert_verdict(v: dict, check: str, detail: tuple[str, ...] = ()) -> None:
    """`v` has exactly the common keys (plus the named detail keys), of the right kinds, for a `check` verdict."""
    assert set(v) == SHAPE | set(detail), f"keys {sorted(v)}"
    assert v["check"] == check and v["enforced"] == ENFORCED[check]
    assert isinstance(v["passed"], bool) and isinstance(v["skipped"], bool)
    assert isinstance(v["gate"], str) and v["gate"] and isinstance(v["reason"], str) and v["reason"]
    word = "SKIP" if v["skipped"] else "PASS" if v["passed"] else "FAIL"
    assert v["line"] == f"{word} {v['gate']}: {v['reason']}"
    json.dumps(v)  # it goes into the JSON reports as is


def failed_merge_report() -> dict:
    """What run_merge reports for a merge whose logits moved: compare() on a bad merge, greedy tokens changed."""
    import torch

    from components.deploy.merge import compare

    before = [torch.tensor([[1.0, 40.0, 3.0]])]
    report = {"method": "lora", "mergeable": True, "route": "merged into the weights",
              **compare(before, [before[0] + 1e-2], rtol=1e-5, atol=1e-5), "greedy_tokens_equal": False}
    report["passed"] = report["within_tolerance"] and report["greedy_tokens_equal"]
    return report


def failed_variant_report() -> dict:
    """What check_variant reports for an int8 graph that lost 20 ROUGE-L points (1 allowed)."""
    return {"file": "model.int8.onnx", "samples": 4, "rouge-l_fp32": 100.0, "rouge-l": 80.0, "rouge-l_delta": -20.0,
            "max_drop": 1.0, "passed": False, "same_answers": 1, "tokens_per_s_fp32": 10.0, "tokens_per_s": 12.0,
            "size_mb": 1.0, "quantize_s": 0.1}


def test_a_failing_merge_parity_gives_a_verdict_of_the_common_shape():
    from components.deploy.merge import merge_verdict

    report = failed_merge_report()
    assert not report["passed"]
    v = merge_verdict(report)
    assert_verdict(v, "merge_parity")
    assert not v["passed"] and v["line"].startswith("FAIL merge_parity: max |logit diff| 0.01 vs tolerance")
    assert v["value"] == report["max_abs_logit_diff"] and v["threshold"] == report["tolerance"]
    assert "greedy tokens equal: False" in v["reason"]
    icl = merge_verdict({"passed": True, "route": "not mergeable: no weights change"})  # nothing to compare
    assert_verdict(icl, "merge_parity")
    assert icl["passed"] and icl["skipped"] and icl["value"] is None


def test_a_failing_quantization_check_gives_a_verdict_of_the_common_shape():
    from components.deploy.quantize import quantization_verdict

    v = quantization_verdict("int8", failed_variant_report())
    assert_verdict(v, "quantization")
    assert not v["passed"] and v["gate"] == "int8" and v["value"] == -20.0 and v["threshold"] == -1.0
    assert v["reason"] == ("ROUGE-L 80.00 vs fp32 100.00 on 4 questions (-20.00; allowed drop 1): "
                           "not shipped as model.int8.onnx")


def test_the_shape_check_rejects_a_verdict_of_another_shape():
    """Negative control: the checks above fail on a gate verdict as gates.py wrote it before (no check, reason,
    enforced, skipped), on a verdict with a key too many, and on one that names the wrong kind of check."""
    from components.deploy.quantize import quantization_verdict

    old = {"gate": "int8", "passed": False, "value": -20.0, "threshold": -1.0, "line": "FAIL int8: lost 20 points"}
    with pytest.raises(AssertionError, match="keys"):
        assert_verdict(old, "quantization")
    good = quantization_verdict("int8", failed_variant_report())
    with pytest.raises(AssertionError, match="keys"):
        assert_verdict({**good, "verdict": "FAIL"}, "quantization")
    with pytest.raises(AssertionError):
        assert_verdict(good, "merge_parity")
    with pytest.raises(AssertionError):
        assert_verdict({**good, "line": "PASS int8: fine"}, "quantization")


def test_every_kind_of_check_speaks_the_same_shape():
    from components.config.params import GatesConfig
    from components.deploy.export import parity_verdict
    from components.evaluation.gates import check_gates, health_verdict
    from components.release.policy import promotion_verdicts

    health = health_verdict({"ok": False, "reason": "non-finite loss", "step": 7, "value": float("nan"), "best_step": 5})
    assert_verdict(health, "training_health")
    assert health["line"] == "FAIL training_health: non-finite loss at step 7 (loss nan); kept the best step 5"
    metrics = {"rouge-l": 70.0, "bleu-4": 60.0, "exact_match": 60.0, "empty_rate": 0.0, "repeated_ngram_rate": 0.0,
               "length_ratio": 1.0, "samples": 60}
    for v in check_gates(metrics, metrics, GatesConfig(), {"ok": True}):
        assert_verdict(v, "training_health" if v["gate"] == "training_health" else "metric", ("interval",) * ("interval" in v))
    parity = parity_verdict({"prompts": 4, "greedy_tokens_equal": False, "mismatches": [1, 3]})
    assert_verdict(parity, "export_parity")
    assert not parity["passed"] and parity["value"] == 2 and "2 of 4 prompts (differ on prompts [1, 3])" in parity["reason"]
    prod = {"version": "v0.0.1", "lineage": {"gates_passed": True, "metrics": {"rouge-l": 50.0}}}
    cand = {"version": "v0.0.2", "lineage": {"gates_passed": False, "metrics": {"rouge-l": 40.0}}}
    refused = promotion_verdicts(cand, prod, 1.0)
    for v in refused:
        assert_verdict(v, "promotion")
    assert [v["gate"] for v in refused if not v["passed"]] == ["gates_passed", "no_regression_rouge-l"]


def test_the_promotion_check_and_the_gate_share_the_paired_regression():
    """One function judges both: the same rows give the same mean and the same decision either way."""
    from components.config.params import GatesConfig
    from components.evaluation.gates import no_regression
    from components.release.policy import promotion_verdicts

    def rows(rouge, em):
        return {f"q{i}": {"id": f"q{i}", "scores": {"rouge-l": r, "exact_match": e}} for i, (r, e) in enumerate(zip(rouge, em))}

    new, old = rows([60.0] * 8 + [70.0] * 2, [100.0] * 10), rows([65.0] * 10, [100.0] * 10)
    gate = {v["gate"]: v for v in no_regression(new, old, GatesConfig(max_regression=1.0))}
    prod, cand = ({"version": v, "lineage": {"gates_passed": True, "metrics": {}}} for v in ("v0.0.1", "v0.0.2"))
    promo = {v["gate"]: v for v in promotion_verdicts(cand, prod, 1.0, new, old)}
    for name in ("no_regression_rouge-l", "no_regression_exact_match"):
        assert gate[name]["check"] == "metric" and promo[name]["check"] == "promotion"
        assert (gate[name]["value"], gate[name]["passed"]) == (promo[name]["value"], promo[name]["passed"])
        assert gate[name]["interval"] == promo[name]["interval"]
    assert gate["no_regression_rouge-l"]["value"] == -3.0 and not promo["no_regression_rouge-l"]["passed"]


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_the_summary_shows_every_verdict_in_one_table(tmp_path, capsys):
    from components.deploy.export import parity_verdict
    from components.deploy.merge import merge_verdict
    from components.deploy.quantize import quantization_verdict
    from components.evaluation.gates import health_verdict
    from components.release.policy import promotion_verdicts
    from flows.report import collect, markdown_report, print_summary, verdicts

    (tmp_path / "params.yaml").write_text("data:\n  path: d.jsonl\n")
    m = tmp_path / "metrics"
    write(m / "gate.json", {"passed": True, "gates": [health_verdict({"ok": True})]})
    ok_merge = {"passed": True, "route": "merged into the weights", "max_abs_logit_diff": 1e-6, "tolerance": 1e-4,
                "greedy_tokens_equal": True, "argmax_equal": True}
    write(m / "merge.json", {**ok_merge, "verdicts": [merge_verdict(ok_merge)]})
    write(m / "export.json", {"verdicts": [parity_verdict({"prompts": 4, "greedy_tokens_equal": True, "mismatches": []}),
                                           quantization_verdict("int8", failed_variant_report())]})
    prod = {"version": "v0.0.1", "lineage": {"gates_passed": True, "metrics": {"rouge-l": 50.0}}}
    cand = {"version": "v0.0.2", "lineage": {"gates_passed": True, "metrics": {"rouge-l": 40.0}}}
    write(m / "promotion.json", {"name": "qa-model", "version": "v0.0.2", "stage": "production", "passed": False,
                                 "verdicts": promotion_verdicts(cand, prod, 1.0)})
    rows = verdicts(collect(tmp_path))
    assert [(v["check"], v["gate"], v["verdict"]) for v in rows] == [
        ("training_health", "training_health", "PASS"), ("merge_parity", "merge_parity", "PASS"),
        ("export_parity", "export_parity", "PASS"), ("quantization", "int8", "FAIL"),
        ("promotion", "gates_passed", "PASS"), ("promotion", "no_regression_rouge-l", "FAIL")]
    md = markdown_report(tmp_path)
    assert "| check | gate | verdict | value | threshold | reason |" in md
    assert "| quantization | int8 | FAIL | -20 | -1 | ROUGE-L 80.00 vs fp32 100.00" in md
    assert "| promotion | no_regression_rouge-l | FAIL | 40 | 49 | rouge-l 40.00 regresses against production v0.0.1" in md
    assert "- PASS training_health: training finished" in md and "qa-model v0.0.2 to production (refused" in md
    print_summary(tmp_path)
    out = capsys.readouterr().out
    assert all(word in out for word in ("verdicts", "merge_parity", "export_parity", "int8", "no_regression_rouge-l"))

    # a failed merge wrote its report beside its output (newer than the metrics file): that one counts, and the
    # export verdicts (an older run's) are left out
    failed = failed_merge_report()
    write(tmp_path / "models" / "merged_report.json", {**failed, "verdicts": [merge_verdict(failed)]})
    later = (m / "merge.json").stat().st_mtime + 5
    os.utime(tmp_path / "models" / "merged_report.json", (later, later))
    rows = verdicts(collect(tmp_path))
    assert [(v["gate"], v["verdict"]) for v in rows][:2] == [("training_health", "PASS"), ("merge_parity", "FAIL")]
    assert not {"export_parity", "int8"} & {v["gate"] for v in rows}
    # a failed gate: the later stages' files are an older run's
    write(m / "gate.json", {"passed": False, "gates": [health_verdict({"ok": False, "reason": "non-finite loss",
                                                                         "step": 3, "value": float("nan")})]})
    assert [v["check"] for v in verdicts(collect(tmp_path))] == ["training_health", "promotion", "promotion"]


def test_the_summary_reads_a_gate_report_written_before_the_common_shape(tmp_path):
    from flows.report import collect, verdicts

    (tmp_path / "params.yaml").write_text("data:\n  path: d.jsonl\n")
    write(tmp_path / "metrics" / "gate.json", {"passed": True, "gates": [
        {"gate": "training_health", "passed": True, "value": None, "threshold": "finite, no spike",
         "line": "PASS training_health: training finished with finite, stable loss"},
        {"gate": "no_regression", "passed": True, "value": None, "threshold": -1.0, "skipped": True,
         "line": "SKIP no_regression: no promoted model to compare with"}]})
    rows = verdicts(collect(tmp_path))
    assert [(v["check"], v["verdict"], v["reason"], v["enforced"]) for v in rows] == [
        ("training_health", "PASS", "training finished with finite, stable loss", "stops the run"),
        ("metric", "SKIP", "no promoted model to compare with", "stops the run")]
