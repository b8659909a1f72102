import re

import pytest
import yaml

from components.config.params import ConfigError, Params, load_params, validate_params, write_overrides


def test_overrides_are_typed(tmp_path):
    p = load_params(tmp_path / "none.yaml", ["train.lr=1e-4", "train.lora.target_modules=[q_proj]", "seed=7"])
    assert p.train.lr == pytest.approx(1e-4)
    assert p.train.lora.target_modules == ["q_proj"]
    assert p.seed == 7


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "train.lrr: unknown key"),
    ("train.lr=fast", "train.lr: Input should be a valid number"),
    ("train.method=sgd", "train.method: Value error, unknown method 'sgd'"),
    ("nosection.x=1", "nosection: unknown key"),
    ("train", "expected KEY=VALUE"),
])
def test_bad_overrides_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_params(tmp_path / "none.yaml", [override])


def test_unknown_key_in_file_is_an_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"params.yaml: train.stepz: unknown key"):
        load_params(f)


def test_write_overrides_keeps_comments_and_validates(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("# top comment\ntrain:\n  lr: 0.001  # learning rate\n  steps: 5\n")
    write_overrides(f, ["train.lr=0.0002"])
    text = f.read_text()
    assert "# top comment" in text and "# learning rate" in text
    assert load_params(f).train.lr == pytest.approx(2e-4)
    with pytest.raises(ConfigError):
        write_overrides(f, ["train.steps=-1"])
    assert load_params(f).train.steps == 5  # a rejected override leaves the file as it was


def test_repo_params_file_is_valid():
    from conftest import ROOT

    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    assert p.model.source == "embedded" and p.model.trust_remote_code is False


TRAIN_CONFLICTS = [  # settings that cannot run together, with the message the train stage gave once a model had loaded
    (["train.budget_minutes=5", "train.method=adalora"],
     "train.budget_minutes: adalora's rank schedule needs train.steps up front; set train.steps"),
    (["train.packing=true", "train.processes=2"], "train.packing runs in one process (train.processes=1)"),
    (["train.processes=4", "train.batch_size=2"],
     "train.batch_size 2 is smaller than train.processes 4: every process needs a share of each batch"),
    (["train.quantize_base=4bit", "train.method=prefix"],
     "train.quantize_base=4bit (QLoRA) needs a LoRA-family method (lora, dora, rslora, adalora, hybrid), not prefix"),
]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Building or loading a model fails the test: the params are refused before any of it."""
    from transformers import AutoModelForCausalLM, PreTrainedModel

    from components.model import base_model

    def refuse(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(base_model, "load_base", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(PreTrainedModel, "__init__", refuse)


@pytest.mark.parametrize("overrides, message", TRAIN_CONFLICTS)
def test_settings_that_cannot_run_together_are_refused_as_the_params_are_read(tmp_path, no_model_loads, overrides,
                                                                              message):
    with pytest.raises(ConfigError) as e:
        load_params(tmp_path / "none.yaml", overrides)
    assert str(e.value) == f"{tmp_path / 'none.yaml'}: train: Value error, {message}"
    raw = {"train": {k.split(".", 1)[1]: yaml.safe_load(v) for k, v in (o.split("=") for o in overrides)}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_params(raw)


@pytest.mark.parametrize("overrides", [
    ["train.budget_minutes=5", "train.method=lora"], ["train.method=adalora", "train.steps=20"],
    ["train.packing=true"], ["train.packing=true", "train.processes=2", "train.method=icl"],  # icl trains nothing
    ["train.processes=2", "train.batch_size=2"], ["train.quantize_base=4bit", "train.method=dora"],
])
def test_the_settings_on_either_side_of_a_conflict_still_load(tmp_path, overrides):
    load_params(tmp_path / "none.yaml", overrides)


def test_a_conflict_made_by_assignment_is_refused_too(tmp_path):
    from pydantic import ValidationError

    p = load_params(tmp_path / "none.yaml", ["train.budget_minutes=5"])
    with pytest.raises(ValidationError, match="adalora's rank schedule"):
        p.train.method = "adalora"
