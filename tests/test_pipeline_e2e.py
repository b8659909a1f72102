"""The whole flow (Prefect over dvc.yaml) on the tiny model, in a fresh git + DVC checkout."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, make_project

BIN = Path(sys.executable).parent
# a random tiny model babbles: only the training-health gate and a floor of 0 stay strict
RELAXED_GATES = ["gates.min_scores.rouge-l=0", "gates.min_gain.rouge-l=-100", "gates.require_significant_gain=false",
                 "gates.max_empty_rate=1", "gates.max_repeated_ngram_rate=1", "gates.min_length_ratio=0",
                 "gates.max_length_ratio=1000"]


SECRETS = {"HF_TOKEN": "hf_secretvalue4tests", "PEFTPIPE_SERVE_TOKEN": "serve-secret-4-tests"}


def sh(args, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1", **SECRETS}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


@pytest.fixture(scope="module")
def project(tiny_model_dir, tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("e2e") / "proj")
    shutil.copy(ROOT / "data" / "qa.jsonl.dvc", proj / "data" / "qa.jsonl.dvc")
    overrides = [f"model.source={tiny_model_dir}", "train.steps=12", "train.batch_size=8", "train.lr=0.02",
                 "evaluate.max_samples=8", "evaluate.max_new_tokens=10", "export.max_new_tokens=6",
                 "export.parity_samples=2", "merge.check_samples=2"] + RELAXED_GATES
    args = [str(BIN / "peftpipe"), "run"] + [x for o in overrides for x in ("-S", o)]
    proc = sh(args, proj)
    return proj, proc.stdout + proc.stderr


def test_run_produces_bundle_metrics_and_summary(project):
    proj, out = project
    assert (proj / "data" / "qa.jsonl").exists()  # generated, and matching the DVC-tracked hash (below)
    stages = ran_stages(out)  # every stage ran once, in an order that respects the graph
    assert sorted(stages) == sorted(["base_model", "validate", "prepare", "train", "evaluate_base", "evaluate",
                                     "gate", "merge", "export"])
    assert stages.index("train") < stages.index("evaluate") < stages.index("gate") < stages.index("merge") < stages.index("export")
    assert "ROUGE-L" in out and "PASS" in out and "bundle:" in out
    assert (proj / "bundle" / "model.onnx").exists() and (proj / "bundle" / "checksums.sha256").exists()
    validate = json.loads((proj / "metrics" / "validate.json").read_text())
    assert validate["rows_in"] == validate["rows_kept"] + validate["rows_quarantined"] == 1012
    status = sh([sys.executable, "-m", "dvc", "status", "data/qa.jsonl.dvc"], proj).stdout
    assert "up to date" in status
    assert "lr: 0.02" in (proj / "params.yaml").read_text()  # -S is recorded, as with dvc exp run -S


def test_secrets_in_the_environment_reach_no_output_or_artifact(project):
    proj, out = project
    for secret in SECRETS.values():
        assert secret not in out
        for f in [*(proj / "metrics").rglob("*"), *(proj / "bundle").rglob("*"), *(proj / "artifacts").rglob("*.json*"),
                  proj / "params.yaml", proj / "dvc.lock"]:
            if f.is_file() and f.stat().st_size < 50_000_000:
                assert secret.encode() not in f.read_bytes(), f


def test_repro_after_run_does_nothing(project):
    proj, _ = project
    out = sh([sys.executable, "-m", "dvc", "repro"], proj).stdout
    assert ran_stages(out) == []
    assert "Data and pipelines are up to date" in out


def test_gate_change_reruns_only_gate_onwards(project):
    proj, _ = project
    params = (proj / "params.yaml").read_text()
    (proj / "params.yaml").write_text(params.replace("rouge-l: -100", "rouge-l: -99"))
    out = sh([sys.executable, "-m", "dvc", "repro"], proj).stdout
    assert ran_stages(out) == ["gate", "merge", "export"]


def test_data_row_change_reruns_validate_and_downstream(project):
    """A train-split row edit reruns validate onwards; the base model and its evaluation are reused."""
    from components.prepare import in_test_split

    proj, _ = project
    data = proj / "data" / "qa.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if not in_test_split(json.loads(line)["question"], 42, 0.1))
    row = json.loads(lines[i])
    lines[i] = json.dumps({**row, "answer": row["answer"].replace(".", "!")}, sort_keys=True) + "\n"
    data.write_text("".join(lines))
    out = sh([sys.executable, "-m", "dvc", "repro"], proj).stdout
    assert ran_stages(out) == ["validate", "prepare", "train", "evaluate", "gate", "merge", "export"], out


def test_failing_gate_stops_before_merge(project):
    proj, _ = project
    out = sh([str(BIN / "peftpipe"), "run", "-S", "gates.min_scores.rouge-l=101"], proj, check=False)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "FAIL min_rouge-l: rouge-l = " in text and "quality gate failed" in text
    assert "Traceback" not in text
    assert "merge" not in ran_stages(text) and "export" not in ran_stages(text)
    gates = json.loads((proj / "artifacts" / "gate" / "gates.json").read_text())
    assert gates["passed"] is False
    assert not (proj / "bundle").exists()  # the earlier bundle is withdrawn, nothing stale to deploy


def test_diverging_training_fails_training_health_gate(project):
    proj, _ = project
    out = sh([str(BIN / "peftpipe"), "run", "-S", "gates.min_scores.rouge-l=0", "-S", "train.lr=1e30"], proj, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-2000:]
    assert "FAIL training_health:" in text and "at step" in text
    assert not (proj / "bundle").exists()




def test_a_method_that_cannot_merge_still_reaches_the_bundle(project):
    """P-Tuning v2 through the CLI: merge ships a KV prefix, export checks ONNX with it, generate uses it.
    (ICL's route is tested at component level in test_merge_export.py.)"""
    proj, _ = project
    method, shipped = "ptuning_v2", "prefix_kv.safetensors"
    out = sh([str(BIN / "peftpipe"), "run", "--method", method, "-S", "train.lr=0.02", "-S", "gates.min_scores.rouge-l=0"], proj)
    text = out.stdout + out.stderr
    assert ran_stages(text) == ["train", "evaluate", "gate", "merge", "export"], text[-2000:]
    merge = json.loads((proj / "metrics" / "merge.json").read_text())
    assert merge["method"] == method and merge["mergeable"] is False and "not mergeable" in merge["route"]
    card = json.loads((proj / "bundle" / "model_card.json").read_text())
    assert card["method"] == method and card["parity"]["greedy_tokens_equal"]
    assert (proj / "bundle" / shipped).exists()
    # the bundle serves from the CLI with its prefix or examples (a random tiny model may answer with EOS at once)
    sh([str(BIN / "peftpipe"), "generate", "--bundle", "bundle", "--max-new-tokens", "4", "--no-stream",
        "What is the capital of Kenya?"], proj)
    from fastapi.testclient import TestClient

    from components.bundle import Bundle
    from components.serve import create_app

    bundle = Bundle(proj / "bundle", variant="fp32")
    assert bundle.lm.prefix is not None  # the server decodes after the learned prefix too
    client = TestClient(create_app(bundle))
    assert client.get("/metadata").json()["method"] == method
    r = client.post("/generate", json={"prompt": "What is the capital of Kenya?", "max_new_tokens": 4})
    assert r.status_code == 200 and r.json()["text"] == bundle.answer("What is the capital of Kenya?", 4)
