"""A refused promotion leaves its verdicts in metrics/promotion.json (the summary's last rows), in the common shape.

A small GTO registry in a fresh git repository: production holds v1.0.0 (ROUGE-L 50), v1.0.1 regresses (48.5)
and v1.0.2 failed its gates. Neither has a bundle, so the registered means decide.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import GIT_IDENTITY

SHAPE = {"gate", "check", "passed", "skipped", "value", "threshold", "reason", "enforced", "line"}


@pytest.fixture
def registry_repo(tmp_path, monkeypatch):
    import gto.api

    for k, v in GIT_IDENTITY.items():
        monkeypatch.setenv(k, v)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for v, (rouge, passed) in {"v1.0.0": (50.0, True), "v1.0.1": (48.5, True), "v1.0.2": (70.0, False)}.items():
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", f"probe {v}"], cwd=tmp_path, check=True)
        gto.api.register(str(tmp_path), "probe", "HEAD", version=v,
                         message=json.dumps({"gates_passed": passed, "metrics": {"rouge-l": rouge}}))
        time.sleep(1.01)  # GTO orders events by their tags' whole-second timestamps
    gto.api.assign(str(tmp_path), "probe", "production", version="v1.0.0")
    time.sleep(1.01)
    return tmp_path


def test_a_refused_promotion_writes_its_verdicts(registry_repo):
    from components.release import registry

    root = registry_repo
    for version, failed, why in (
            ("v1.0.1", "no_regression_rouge-l", "rouge-l 48.50 regresses against production v1.0.0 (50.00; at most 1 points lower allowed)"),
            ("v1.0.2", "gates_passed", "v1.0.2 did not pass its quality gates")):
        with pytest.raises(registry.RegistryError, match=f"refusing to promote probe {version} to production"):
            registry.promote(root, "probe", version, "production", ".deploy", 1.0)
        report = json.loads((root / "metrics" / "promotion.json").read_text())
        assert (report["name"], report["version"], report["stage"], report["production"], report["passed"]) == (
            "probe", version, "production", "v1.0.0", False)
        assert all(set(v) == SHAPE and v["check"] == "promotion" and v["enforced"] == "refuses the promotion"
                   for v in report["verdicts"])
        refused = [v for v in report["verdicts"] if not v["passed"]]
        assert [v["gate"] for v in refused] == [failed] and refused[0]["reason"] == why
    assert registry.current(root, "probe", "production") == "v1.0.0"
