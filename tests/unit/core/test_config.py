import pytest

from components.config.params import ConfigError, Params, load_params, write_overrides


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
