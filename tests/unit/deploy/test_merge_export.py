import json
import shutil
from pathlib import Path

import pytest

from components.bundle.format import BundleCheckFailed, verify_checksums
from components.deploy.export import run_export
from components.deploy.merge import compare, run_merge
from components.bundle.onnx_decoder import OnnxCausalLM
from components.methods import NAMES as METHOD_NAMES
from components.training.train import run_train

VERDICT_KEYS = {"gate", "check", "passed", "skipped", "value", "threshold", "reason", "enforced", "line"}  # the common shape


def test_merge_is_checked(exported):
    _, report, _ = exported
    assert report["passed"] and report["greedy_tokens_equal"] and report["argmax_equal"]
    assert report["max_abs_logit_diff"] <= report["tolerance"]
    [v] = report["verdicts"]
    assert set(v) == VERDICT_KEYS and v["check"] == "merge_parity" and v["passed"] and v["value"] == report["max_abs_logit_diff"]


def test_a_failing_merge_parity_stops_the_merge_with_a_verdict(exported, tmp_path, monkeypatch):
    """The merged logits judged out of tolerance: nothing is written but the report beside the output, whose
    verdict has the common shape and says what stopped the run."""
    from components.deploy import merge as merge_mod
    from components.deploy.merge import MergeCheckFailed

    p, _, _ = exported
    real = merge_mod.compare
    monkeypatch.setattr(merge_mod, "compare", lambda *a, **k: {**real(*a, **k), "within_tolerance": False})
    with pytest.raises(MergeCheckFailed, match="merge check failed"):
        run_merge(p, p.paths.base_model, p.paths.prepared, p.paths.train, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    [v] = json.loads((tmp_path / "merged_report.json").read_text())["verdicts"]
    assert set(v) == VERDICT_KEYS and v["check"] == "merge_parity" and v["enforced"] == "stops the run"
    assert not v["passed"] and v["line"].startswith("FAIL merge_parity: max |logit diff|")


def test_compare_catches_a_bad_merge():
    import torch

    a = [torch.tensor([[1.0, 40.0, 3.0]])]
    assert compare(a, [a[0] + 1e-5], rtol=1e-5, atol=1e-5)["within_tolerance"]
    assert not compare(a, [a[0] + 1e-2], rtol=1e-5, atol=1e-5)["within_tolerance"]


def test_onnx_matches_pytorch_and_bundle_is_complete(exported):
    p, _, parity = exported
    bundle = p.paths.bundle
    assert parity["greedy_tokens_equal"] and parity["prompts"] == p.export.parity_samples
    assert [(v["check"], v["gate"], v["passed"]) for v in parity["verdicts"]] == [
        ("export_parity", "export_parity", True), ("quantization", "int8", True), ("quantization", "int4", True)]
    assert all(set(v) == VERDICT_KEYS for v in parity["verdicts"])
    card = json.loads(open(f"{bundle}/model_card.json").read())
    assert card["method"] == "lora" and card["data"]["md5"] and card["metrics"]["gates"]["passed"]
    verify_checksums(bundle)


def test_onnx_kv_cache_equals_full_recompute(exported):
    """Incremental decoding with the cache gives the same logits as recomputing the whole sequence."""
    import numpy as np

    p, _, _ = exported
    lm = OnnxCausalLM(p.paths.bundle)
    ids = [5, 17, 42, 99, 7, 3]
    full, _ = lm.step(ids, lm._empty_past(), 0)
    _, past = lm.step(ids[:4], lm._empty_past(), 0)
    _, past = lm.step(ids[4:5], past, 4)
    last, _ = lm.step(ids[5:], past, 5)
    assert np.abs(full - last).max() < 1e-4


def test_corrupt_bundle_is_refused(exported, tmp_path):
    p, _, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(p.paths.bundle, copy)
    with open(copy / "generation_config.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleCheckFailed, match="generation_config.json is missing or corrupt"):
        verify_checksums(copy)


def test_a_bundle_holding_unlisted_files_is_refused(exported, tmp_path):
    """A file slipped into a bundle (say a model that never passed a gate) is not in checksums.sha256: the bundle is
    refused before anything in it is loaded."""
    from components.bundle.loader import Bundle

    p, _, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(p.paths.bundle, copy)
    verify_checksums(copy)
    (copy / "extra").mkdir()
    shutil.copy(copy / "model.onnx", copy / "extra" / "model.onnx")
    with pytest.raises(BundleCheckFailed, match="extra/model.onnx not listed in checksums.sha256"):
        Bundle(copy)


def test_auto_variant_prefers_int8(tmp_path):
    from components.bundle.format import variant_file

    for name in ("model.onnx", "model.int8.onnx", "model.int4.onnx"):
        (tmp_path / name).write_bytes(b"x")
    assert variant_file(tmp_path, "auto") == ("int8", "model.int8.onnx")
    (tmp_path / "model.int8.onnx").unlink()
    assert variant_file(tmp_path, "auto") == ("int4", "model.int4.onnx")


def test_generate_cli_answers_from_bundle(exported, capsys):
    from peftpipe.cli import main

    p, _, _ = exported
    assert main(["generate", "--bundle", p.paths.bundle, "--max-new-tokens", "5", "What is the capital of Peru?"]) == 0
    out = capsys.readouterr().out.strip()
    assert out  # the tiny random model's words; the embedded e2e test checks they make sense
    assert main(["generate", "--bundle", str(p.paths.bundle) + "_missing", "x"]) == 2


def test_icl_bundle_carries_its_examples_into_onnx_prompts(exported, tmp_path, capsys):
    """ICL changes no weight: merge ships the examples, export checks ONNX on prompts that contain them."""
    from components.methods.icl import read_shots
    from peftpipe.cli import main

    p, _, _ = exported
    q = p.model_copy(deep=True)
    q.train.method = "icl"
    P = q.paths
    run_train(q, P.base_model, P.prepared, tmp_path / "train", tmp_path / "ckpt", progress=False)
    report = run_merge(q, P.base_model, P.prepared, tmp_path / "train", tmp_path / "merged")
    assert report["mergeable"] is False and "in-context examples" in report["route"]
    parity = run_export(q, tmp_path / "merged", P.prepared, P.eval_base, P.eval, P.gate, tmp_path / "bundle")
    assert parity["greedy_tokens_equal"] and parity["icl_shots"] == q.train.icl.shots
    assert read_shots(tmp_path / "bundle") == read_shots(tmp_path / "train")
    verify_checksums(tmp_path / "bundle")
    assert main(["generate", "--bundle", str(tmp_path / "bundle"), "--max-new-tokens", "3", "--no-stream", "Hi?"]) == 0


def test_batched_onnx_decoding_equals_one_at_a_time(exported):
    from components.evaluation.evaluate import test_samples

    p, _, _ = exported
    lm = OnnxCausalLM(p.paths.bundle)
    prompts = [s["prompt_ids"] for s in test_samples(p.paths.prepared, 6, p.prepare.split_seed)]
    assert len({len(x) for x in prompts}) > 1  # different lengths: left padding is exercised
    eos = json.loads((Path(p.paths.bundle) / "generation_config.json").read_text())["eos_token_id"]
    assert lm.generate_batch(prompts, 8, eos) == [lm.generate(x, 8, eos) for x in prompts]


def test_int8_variant_ships_when_its_gate_passes(exported):
    from components.bundle.loader import Bundle

    p, _, parity = exported
    v = parity["variants"]["int8"]
    assert v["passed"] and v["samples"] == 6 and v["size_mb"] > 0 and v["max_drop"] == 100
    assert (Path(p.paths.bundle) / "model.int8.onnx").exists() and parity["variants"]["int4"]["passed"]
    assert Bundle(p.paths.bundle).variant == "int8"  # auto: int8 when it passed, as README says (int4 loses more)
    assert Bundle(p.paths.bundle, variant="int4").variant == "int4" and Bundle(p.paths.bundle, variant="fp32").variant == "fp32"
    # 8-bit weights keep the tiny model's greedy answers
    assert v["same_answers"] == v["samples"] and v["rouge-l_delta"] == 0
    assert "int8 variant" in (Path(p.paths.bundle) / "README.md").read_text()


def test_int8_variant_failing_its_gate_is_removed(exported, tmp_path):
    """Against answers that are perfect by construction the int8 graph loses ROUGE-L: the gate rejects it."""
    from transformers import AutoTokenizer

    from components.evaluation.evaluate import test_samples
    from components.deploy.quantize import check_variant, quantization_verdict

    p, _, _ = exported
    folder = tmp_path / "b"
    shutil.copytree(p.paths.bundle, folder)
    (folder / "model.int8.onnx").unlink()
    tok = AutoTokenizer.from_pretrained(folder)
    samples = test_samples(p.paths.prepared, 4, p.prepare.split_seed)
    refs = [s["answer"] for s in samples]
    perfect = ([tok(r, add_special_tokens=False)["input_ids"] for r in refs], 1.0)
    report = check_variant(folder, "int8", [s["prompt_ids"] for s in samples], refs, tok, 8, 1.0, "en", fp32=perfect)
    assert report["rouge-l_fp32"] > 99 and report["rouge-l_delta"] < -1 and not report["passed"]
    assert not (folder / "model.int8.onnx").exists()
    v = quantization_verdict("int8", report)
    assert set(v) == VERDICT_KEYS and v["check"] == "quantization" and not v["passed"]
    assert v["value"] == report["rouge-l_delta"] and v["enforced"] == "keeps the variant out of the bundle"


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if m != "lora"])  # lora: the `exported` fixture
def test_each_method_answers_through_generate_and_serve(exported, tmp_path, method, capsys):
    """Every method reaches a checked bundle (merged weights, KV prefix or ICL examples) that
    `peftpipe generate` and the server answer from alike."""
    from fastapi.testclient import TestClient

    from components.bundle.loader import Bundle
    from components.serving.serve import create_app
    from peftpipe.cli import main

    p, _, _ = exported
    q = p.model_copy(deep=True)
    q.train.method, q.train.steps = method, 4
    q.export.quantize = []  # the variants' gate is tested above
    P = q.paths
    run_train(q, P.base_model, P.prepared, tmp_path / "train", tmp_path / "ckpt", progress=False)
    assert run_merge(q, P.base_model, P.prepared, tmp_path / "train", tmp_path / "merged")["passed"]
    parity = run_export(q, tmp_path / "merged", P.prepared, P.eval_base, P.eval, P.gate, tmp_path / "bundle")
    card = json.loads((tmp_path / "bundle" / "model_card.json").read_text())
    assert parity["greedy_tokens_equal"] and card["method"] == method and card["parity"]["greedy_tokens_equal"]
    assert (tmp_path / "bundle" / "prefix_kv.safetensors").exists() == (method in ("prefix", "ptuning_v2", "ptuning", "prompt"))
    assert (tmp_path / "bundle" / "icl.json").exists() == (method == "icl")
    bundle = Bundle(tmp_path / "bundle", variant="fp32")
    r = TestClient(create_app(bundle)).post("/generate", json={"prompt": "Who wrote Hamlet?", "max_new_tokens": 5})
    assert r.status_code == 200
    capsys.readouterr()  # only what generate prints below
    assert main(["generate", "--bundle", str(tmp_path / "bundle"), "--variant", "fp32", "--max-new-tokens", "5",
                 "--no-stream", "Who wrote Hamlet?"]) == 0
    assert capsys.readouterr().out.strip() == r.json()["text"]


def test_model_card_shows_the_drift_figures(exported):
    import json

    p, _, _ = exported
    d = json.loads((Path(p.paths.eval) / "metrics.json").read_text())["drift"]
    card = (Path(p.paths.bundle) / "README.md").read_text()
    assert "## Drift off general behaviour" in card
    # a random tiny model's base answers loop: drift is then not measured, and the card says why
    assert (f"drift {d['drift']:+.3f}" in card) if d["drift"] is not None else (f"Not measured: {d['skipped']}" in card)
    assert "max_drift" in card  # the gate's verdict line (gates.max_drift is set by default)


def test_quantize_embeddings_auto_leaves_a_small_vocabulary_in_fp32(exported):
    """`export.quantize_embeddings: auto` quantizes the embedding and head only from 100,000 tokens (the tiny model
    has 400; tests/unit/deploy/test_vocab_quant.py covers the quantized path)."""
    p, _, parity = exported
    assert p.export.quantize_embeddings == "auto"
    assert all(not r["embedding_quantized"] and not r["head_quantized"] for r in parity["variants"].values())
