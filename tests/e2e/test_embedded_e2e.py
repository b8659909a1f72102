"""The whole pipeline on the embedded SmolLM2-135M-Instruct with a few steps (slow: a few minutes)."""

import json
import shutil

import pytest

from conftest import BIN, ROOT, make_project, ran_stages, sh

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("embedded") / "proj")
    shutil.copy(ROOT / "data" / "qa.jsonl.dvc", proj / "data" / "qa.jsonl.dvc")
    overrides = ["train.steps=8", "train.batch_size=8", "train.checkpoint_every=4", "evaluate.max_samples=16",
                 "evaluate.max_new_tokens=24", "export.max_new_tokens=12", "export.parity_samples=2",
                 "merge.check_samples=2", "export.quant_eval_samples=4", "gates.min_scores.rouge-l=30", "gates.min_gain.rouge-l=0",
                 "gates.require_significant_gain=false", "gates.min_scores.exact_match=0", "gates.min_gain.exact_match=-100",
                 "gates.min_samples=16"]  # 8 steps: a smoke run, not a model that knows the facts
    proc = sh([str(BIN / "peftpipe"), "run"] + [x for o in overrides for x in ("-S", o)], proj)
    return proj, proc.stdout + proc.stderr


def test_embedded_pipeline_end_to_end(embedded_run):
    proj, out = embedded_run
    assert len(ran_stages(out)) == 9
    base = json.loads((proj / "metrics" / "evaluate_base.json").read_text())
    tuned = json.loads((proj / "metrics" / "evaluate.json").read_text())
    assert tuned["rouge-l"] >= base["rouge-l"]  # also enforced by the gate (min_rouge_l_gain=0)
    merge = json.loads((proj / "metrics" / "merge.json").read_text())
    assert merge["passed"] and merge["greedy_tokens_equal"]
    export = json.loads((proj / "metrics" / "export.json").read_text())
    assert export["greedy_tokens_equal"]
    int8 = export["variants"]["int8"]  # measured against fp32 on the real model; shipped only if within the limit
    assert int8["samples"] == 4 and (proj / "bundle" / "model.int8.onnx").exists() == int8["passed"]
    # on 4 questions one changed answer moves ROUGE-L by many points: the verdict must follow the limit, either way
    assert int8["passed"] == (int8["rouge-l_delta"] >= -int8["max_drop"])
    src = json.loads((proj / "models" / "base" / "peftpipe_source.json").read_text())
    assert src["architecture"] == "LlamaForCausalLM" and 130e6 < src["parameters"] < 140e6


def test_embedded_bundle_answers_sensibly(embedded_run):
    proj, _ = embedded_run
    out = sh([str(BIN / "peftpipe"), "generate", "--bundle", "bundle", "--no-stream",
              "What is the capital of France?"], proj).stdout
    assert "Paris" in out
