import json

import pytest

from components.gates import GateFailed, check_gates, run_gate
from peftpipe.config import GatesConfig


def test_verdicts():
    v = check_gates({"rouge-l": 70.0}, {"rouge-l": 50.0}, GatesConfig(min_rouge_l=60, min_rouge_l_gain=10))
    assert [x["passed"] for x in v] == [True, True]
    v = check_gates({"rouge-l": 55.0}, {"rouge-l": 50.0}, GatesConfig(min_rouge_l=60, min_rouge_l_gain=10))
    assert [x["passed"] for x in v] == [False, False]
    assert v[1]["value"] == 5.0 and v[1]["line"].startswith("FAIL min_rouge_l_gain")


def test_failed_gate_writes_report_then_raises(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "t").mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"rouge-l": 40.0}))
    (tmp_path / "t" / "metrics.json").write_text(json.dumps({"rouge-l": 45.0}))
    with pytest.raises(GateFailed, match="min_rouge_l_gain"):
        run_gate(tmp_path / "b", tmp_path / "t", GatesConfig(min_rouge_l=30, min_rouge_l_gain=10), tmp_path / "g")
    report = json.loads((tmp_path / "g" / "gates.json").read_text())
    assert report["passed"] is False and report["gates"][0]["passed"] is True
