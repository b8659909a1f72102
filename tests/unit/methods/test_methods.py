"""Every method behind train.method, through the CLI (`peftpipe stage ...`, in-process): trains, is
crash-resumed exactly, saves, reloads, evaluates and merges (or reaches its own deployable form)."""

import json

import pytest
import torch

from components.model import kv_prefix
from components.training import batches
from components.model.base_model import load_base
from components.methods import NAMES, get_method, mergeable, route, trains
from components.model.trained import load_trained
from components.methods.icl import read_shots
from conftest import crash_training_at, tiny_overrides
from peftpipe.cli import main

TRAINED = [m for m in NAMES if trains(m)]
PROMPT_METHODS = [m for m in NAMES if route(m) == "kv_prefix"]


def test_methods_are_the_modules_of_components_methods_and_declare_their_route():
    from pathlib import Path

    import components.methods as methods

    modules = sorted(f.stem for f in Path(methods.__file__).parent.glob("*.py") if f.stem not in ("__init__", "base"))
    assert list(NAMES) == modules and "base" not in NAMES
    assert {m: route(m) for m in NAMES} == {
        **dict.fromkeys(["lora", "dora", "rslora", "adalora", "ia3", "loha", "lokr", "hybrid"], "merge"),
        **dict.fromkeys(["prefix", "ptuning_v2", "ptuning", "prompt"], "kv_prefix"),
        "full": "weights", "selective": "weights", "icl": "icl"}
    assert [m for m in NAMES if not trains(m)] == ["icl"] and methods.shipped_files("icl") == ("icl.json",)
    assert methods.shipped_files("prefix") == ("prefix_kv.safetensors",) and methods.shipped_files("lora") == ()
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_method_hooks_are_no_ops_for_methods_without_them(tmp_path):
    import components.methods as methods

    lora = get_method("lora")
    methods.after_step(lora, None, 1)
    methods.save_extra_state(lora, None, tmp_path / "state.safetensors")
    methods.load_extra_state(lora, None, tmp_path / "state.safetensors")
    assert not (tmp_path / "state.safetensors").exists()


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A project folder with the tiny model's base model, data, prepared splits and base evaluation."""
    from conftest import ROOT

    proj = tmp_path_factory.mktemp("methods")
    (proj / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    sets = tiny_overrides(proj, tiny_model_dir, ["train.steps=10", "train.checkpoint_every=4",
                                                  "evaluate.max_samples=8", "evaluate.max_new_tokens=6",
                                                  "merge.check_samples=2"])
    for stage in ("base_model", "validate", "prepare", "evaluate_base"):
        assert stage_cli(proj, sets, stage) == 0
    return proj, sets, metrics(proj, "evaluate_base")


def stage_cli(proj, sets, stage, *extra) -> int:
    """`peftpipe stage STAGE -S ...` run from the project folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(proj)
        return main(["stage", stage] + [x for o in [*sets, *extra] for x in ("-S", o)])


def metrics(proj, stage) -> dict:
    return json.loads((proj / "metrics" / f"{stage}.json").read_text())


def probe_logits(model, seq):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([seq])).logits[0, -len(seq):]  # prompt tuning prepends virtual positions


SEQ = list(range(5, 25))


@pytest.mark.parametrize("method", TRAINED)
def test_method_trains_resumes_saves_reloads_evaluates_and_merges(setup, monkeypatch, method):
    proj, sets, base_eval = setup
    run = proj / "runs" / method
    m = [f"train.method={method}"]
    assert stage_cli(proj, sets, "train", *m, f"paths.train={run}/a") == 0
    clean = metrics(proj, "train")
    assert 0 < clean["trainable_params"] < clean["total_params"] or method == "full"
    assert clean["health"]["ok"] and clean["family"] == get_method(method).FAMILY

    real = crash_training_at(monkeypatch, 7)
    assert stage_cli(proj, sets, "train", *m, f"paths.train={run}/b") == 130  # interrupted
    monkeypatch.setattr(batches, "collate", real)
    assert stage_cli(proj, sets, "train", *m, f"paths.train={run}/b") == 0
    assert metrics(proj, "train")["resumed_at"] == 4

    base_dir = proj / "models" / "base"
    a, _, name = load_trained(base_dir, run / "a")
    b, _, _ = load_trained(base_dir, run / "b")
    base, _ = load_base(base_dir)
    la, lb, l0 = probe_logits(a, SEQ), probe_logits(b, SEQ), probe_logits(base, SEQ)
    assert name == method
    assert float((la - lb).abs().max()) <= 1e-5  # the resumed run ends where the uninterrupted one does
    assert float((la - l0).abs().max()) > 1e-4  # what was trained is really loaded

    assert stage_cli(proj, sets, "evaluate", *m, f"paths.train={run}/a", f"paths.eval={run}/eval") == 0
    ev = metrics(proj, "evaluate")
    assert ev["samples"] == 8 and ev["eval_loss"] < base_eval["eval_loss"]
    assert len((run / "eval" / "predictions.jsonl").read_text().splitlines()) == 8

    assert stage_cli(proj, sets, "merge", *m, f"paths.train={run}/a", f"paths.merged={run}/merged") == 0
    report = metrics(proj, "merge")
    assert report["passed"] and report["method"] == method
    assert report["mergeable"] is mergeable(method)
    if get_method(method).SAVE in ("model", "selected"):
        assert report["route"].startswith("nothing to merge")  # already the model's own weights
    else:  # merged (or turned into a prefix) and checked against the trained model
        assert report["greedy_tokens_equal"] and report["within_tolerance"]
    if method in PROMPT_METHODS:  # not mergeable: the learned prompt becomes an equivalent key/value prefix
        assert "key/value prefix" in report["route"]
        prefix = kv_prefix.load(run / "merged")
        assert kv_prefix.prefix_length(prefix) == 16 and len(prefix) == 2 * 2  # two layers, keys and values
        merged, _ = load_base(run / "merged")
        with torch.inference_mode():
            with_prefix = kv_prefix.forward(merged, SEQ, prefix)[0]
        assert float((with_prefix - probe_logits(merged, SEQ)).abs().max()) > 1e-4


def test_icl_draws_fixed_shots_and_puts_them_in_prompts(setup):
    proj, sets, base_eval = setup
    run = proj / "runs" / "icl"
    m = ["train.method=icl", "train.icl.shots=2"]
    for d in ("a", "b"):
        assert stage_cli(proj, sets, "train", *m, f"paths.train={run}/{d}") == 0
    assert metrics(proj, "train")["trainable_params"] == 0 and metrics(proj, "train")["shots"] == 2
    shots = read_shots(run / "a")
    assert shots == read_shots(run / "b") and len(shots) == 2
    assert [t["role"] for t in shots[0]] == ["user", "assistant"]
    assert stage_cli(proj, sets, "evaluate", *m, f"paths.train={run}/a", f"paths.eval={run}/eval") == 0
    ev = metrics(proj, "evaluate")
    assert ev["eval_loss"] != base_eval["eval_loss"]  # the examples changed what the model sees
    assert ev["generation"]["samples"] == 8
    assert stage_cli(proj, sets, "merge", *m, f"paths.train={run}/a", f"paths.merged={run}/merged") == 0
    assert read_shots(run / "merged") == shots  # the examples travel to the bundle


def project_params(setup):
    from components.config.params import load_params

    proj, sets, _ = setup
    return load_params(proj / "params.yaml", sets)


def test_prompt_tuning_initialised_from_text(setup):
    """init_text: the virtual tokens start as the text's own embeddings."""
    from transformers import AutoTokenizer

    from components.methods import Context

    p = project_params(setup)
    model, _ = load_base(p.paths.base_model)
    c = p.train.prompt.model_copy(update={"init_text": "Answer the question", "num_virtual_tokens": 3})
    peft_model = get_method("prompt").apply(model, c, Context(steps=1, base_dir=p.paths.base_model, seed=0))
    tok = AutoTokenizer.from_pretrained(p.paths.base_model)
    ids = tok("Answer the question", add_special_tokens=False)["input_ids"][:3]
    emb = model.get_input_embeddings().weight[ids]
    assert torch.allclose(peft_model.prompt_encoder["default"].embedding.weight, emb)


def test_selective_refuses_an_empty_selection(setup):
    from components.methods import Context

    p = project_params(setup)
    model, _ = load_base(p.paths.base_model)
    c = p.train.selective.model_copy(update={"biases": True, "norms": False, "last_layers": 0})  # Llama has no biases
    with pytest.raises(ValueError, match="selects no parameter"):
        get_method("selective").apply(model, c, Context(steps=1, base_dir=p.paths.base_model, seed=0))


def test_adalora_budget_prunes_ranks(setup):
    proj, sets, _ = setup
    run = proj / "runs" / "adalora_budget"
    assert stage_cli(proj, sets, "train", "train.method=adalora", "train.steps=20", "train.adalora.init_r=6",
                     "train.adalora.target_r=2", "train.adalora.tinit=0.1", "train.adalora.tfinal=0.3",
                     "train.adalora.delta_t=2", f"paths.train={run}") == 0
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    ranks = [sum(v) if isinstance(v, list) else v for v in config["rank_pattern"].values()]
    assert config["rank_pattern"] and sum(ranks) <= 2 * len(ranks) < 6 * len(ranks)


def test_prefix_starts_as_the_keys_and_values_of_its_init_text(setup):
    """The untrained prefix behaves exactly as if init_text were written before every prompt."""
    from transformers import AutoTokenizer

    from components.methods import Context

    p = project_params(setup)
    tok = AutoTokenizer.from_pretrained(p.paths.base_model)
    ids = tok("Answer the question briefly.", add_special_tokens=False)["input_ids"]
    c = p.train.prefix.model_copy(update={"init_text": "Answer the question briefly.", "num_virtual_tokens": len(ids)})
    model, _ = load_base(p.paths.base_model)
    prefix = kv_prefix.compute_prefix(get_method("prefix").apply(model, c, Context(steps=1, base_dir=p.paths.base_model, seed=0)))
    base, _ = load_base(p.paths.base_model)
    with torch.inference_mode():
        with_prefix = kv_prefix.forward(base, SEQ, prefix)[0]
        with_text = base(input_ids=torch.tensor([ids + SEQ])).logits[0, len(ids):]
    assert float((with_prefix - with_text).abs().max()) < 1e-4
