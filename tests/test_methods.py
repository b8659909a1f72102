"""Every method behind train.method: trains, checkpoints, resumes exactly, saves, reloads, evaluates."""

import json

import pytest
import torch

from components import kv_prefix
from components import train as train_mod
from components.base_model import load_base, materialise
from components.evaluate import run_evaluate
from components.merge import run_merge
from components.methods import NAMES, get_method, load_trained
from components.prepare import run_prepare
from components.validate import run_validate
from conftest import tiny_params

TRAINED = [m for m in NAMES if m != "icl"]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("methods")
    p = tiny_params(tmp, tiny_model_dir, ["train.steps=10", "train.checkpoint_every=4", "evaluate.max_samples=8",
                                          "evaluate.max_new_tokens=6", "export.max_new_tokens=6"])
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.seed, p.paths.prepared)
    base_eval = run_evaluate(p, "base", p.paths.base_model, p.paths.prepared, None, tmp / "eval_base")
    return tmp, p, base_eval


def params_for(p, method):
    q = p.model_copy(deep=True)
    q.train.method = method
    return q


def probe_logits(model, seq):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([seq])).logits[0, -len(seq):]  # prompt tuning prepends virtual positions


SEQ = list(range(5, 25))


@pytest.mark.parametrize("method", TRAINED)
def test_method_trains_resumes_saves_reloads_and_evaluates(setup, tmp_path, monkeypatch, method):
    _, p, base_eval = setup
    q = params_for(p, method)
    base_dir, prepared = p.paths.base_model, p.paths.prepared
    clean = train_mod.run_train(q, base_dir, prepared, tmp_path / "a" / "train", tmp_path / "a" / "ckpt", progress=False)
    assert 0 < clean["trainable_params"] < clean["total_params"] or method == "full"
    assert clean["health"]["ok"] and clean["family"] == get_method(method).FAMILY

    real, calls = train_mod.collate, {"n": 0}

    def crash(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "collate", crash)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run_train(q, base_dir, prepared, tmp_path / "b" / "train", tmp_path / "b" / "ckpt", progress=False)
    monkeypatch.setattr(train_mod, "collate", real)
    resumed = train_mod.run_train(q, base_dir, prepared, tmp_path / "b" / "train", tmp_path / "b" / "ckpt", progress=False)
    assert resumed["resumed_at"] == 4

    a, _, name = load_trained(base_dir, tmp_path / "a" / "train")
    b, _, _ = load_trained(base_dir, tmp_path / "b" / "train")
    base, _ = load_base(base_dir)
    la, lb, l0 = probe_logits(a, SEQ), probe_logits(b, SEQ), probe_logits(base, SEQ)
    assert name == method
    assert float((la - lb).abs().max()) <= 1e-5  # the resumed run ends where the uninterrupted one does
    assert float((la - l0).abs().max()) > 1e-4  # what was trained is really loaded

    m = run_evaluate(q, "tuned", base_dir, prepared, tmp_path / "a" / "train", tmp_path / "eval")
    assert m["samples"] == 8 and m["eval_loss"] < base_eval["eval_loss"]
    rows = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 8


def test_icl_draws_fixed_shots_and_puts_them_in_prompts(setup, tmp_path):
    from components.methods.icl import read_shots

    _, p, base_eval = setup
    q = params_for(p, "icl")
    q.train.icl.shots = 2
    m1 = train_mod.run_train(q, p.paths.base_model, p.paths.prepared, tmp_path / "a", tmp_path / "ca", progress=False)
    train_mod.run_train(q, p.paths.base_model, p.paths.prepared, tmp_path / "b", tmp_path / "cb", progress=False)
    shots = read_shots(tmp_path / "a")
    assert m1["trainable_params"] == 0 and m1["shots"] == 2
    assert shots == read_shots(tmp_path / "b") and len(shots) == 2
    assert [t["role"] for t in shots[0]] == ["user", "assistant"]
    m = run_evaluate(q, "tuned", p.paths.base_model, p.paths.prepared, tmp_path / "a", tmp_path / "eval")
    assert m["eval_loss"] != base_eval["eval_loss"]  # the examples changed what the model sees
    assert m["generation"]["samples"] == 8


def test_prompt_tuning_initialised_from_text(setup, tmp_path):
    """init_text: the virtual tokens start as the text's own embeddings."""
    from transformers import AutoTokenizer

    from components.methods import Context

    _, p, _ = setup
    model, _ = load_base(p.paths.base_model)
    c = p.train.prompt.model_copy(update={"init_text": "Answer the question", "num_virtual_tokens": 3})
    peft_model = get_method("prompt").apply(model, c, Context(steps=1, base_dir=p.paths.base_model, seed=0))
    tok = AutoTokenizer.from_pretrained(p.paths.base_model)
    ids = tok("Answer the question", add_special_tokens=False)["input_ids"][:3]
    emb = model.get_input_embeddings().weight[ids]
    assert torch.allclose(peft_model.prompt_encoder["default"].embedding.weight, emb)


def test_selective_refuses_an_empty_selection(setup):
    from components.methods import Context

    _, p, _ = setup
    model, _ = load_base(p.paths.base_model)
    c = p.train.selective.model_copy(update={"biases": True, "norms": False, "last_layers": 0})  # Llama has no biases
    with pytest.raises(ValueError, match="selects no parameter"):
        get_method("selective").apply(model, c, Context(steps=1, base_dir=p.paths.base_model, seed=0))


def test_adalora_budget_prunes_ranks(setup, tmp_path):
    _, p, _ = setup
    q = params_for(p, "adalora")
    q.train.steps = 20
    q.train.adalora = q.train.adalora.model_copy(update={"init_r": 6, "target_r": 2, "tinit": 0.1, "tfinal": 0.3,
                                                         "delta_t": 2})
    train_mod.run_train(q, p.paths.base_model, p.paths.prepared, tmp_path / "t", tmp_path / "c", progress=False)
    config = json.loads((tmp_path / "t" / "adapter" / "adapter_config.json").read_text())
    ranks = [sum(v) if isinstance(v, list) else v for v in config["rank_pattern"].values()]
    assert config["rank_pattern"] and sum(ranks) <= 2 * len(ranks) < 6 * len(ranks)


@pytest.mark.parametrize("method", ["prefix", "ptuning_v2", "ptuning", "prompt"])
def test_prompt_methods_merge_into_an_equivalent_kv_prefix(setup, tmp_path, method):
    _, p, _ = setup
    q = params_for(p, method)
    train_mod.run_train(q, p.paths.base_model, p.paths.prepared, tmp_path / "t", tmp_path / "c", progress=False)
    report = run_merge(q, p.paths.base_model, p.paths.prepared, tmp_path / "t", tmp_path / "merged")
    assert report["passed"] and report["greedy_tokens_equal"] and report["mergeable"] is False
    assert "key/value prefix" in report["route"]
    prefix = kv_prefix.load(tmp_path / "merged")
    n = q.train.method_config().num_virtual_tokens
    assert kv_prefix.prefix_length(prefix) == n and len(prefix) == 2 * 2  # two layers, keys and values
    base, _ = load_base(tmp_path / "merged")
    with torch.inference_mode():
        with_prefix = kv_prefix.forward(base, SEQ, prefix)[0]
    assert float((with_prefix - probe_logits(base, SEQ)).abs().max()) > 1e-4
