"""`peftpipe model inspect` on every family, and what a family cannot do refused at the base_model stage in one line."""

from __future__ import annotations

import pytest

from conftest import ROOT, tiny_params
from families import FAMILIES


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_inspect_on_every_family(family_dirs, name, tmp_path):
    from components.inspect.model import inspect_model

    fam = FAMILIES[name]
    r = inspect_model(tiny_params(tmp_path, family_dirs[name], [f"model.source={family_dirs[name]}"]), tmp_path)
    assert r["bos"]["added"] is fam.adds_bos and r["end_of_turn"] == fam.end_of_turn
    assert r["sample"]["learned"].endswith(fam.end_of_turn) and set(r["sample"]["mask"]) == {".", "L"}
    assert r["parameters"] > 0 and (tmp_path / "model_inspect.json").exists()
    assert ("has no chat template" in r["chat_template"]) is (fam.template is None)


def test_the_cli_inspects_the_embedded_model(tmp_path, monkeypatch, capsys):
    """The quick start's model: ChatML, no BOS added, <|im_end|> ends a turn and is EOS."""
    import shutil

    from peftpipe.cli import main

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["model", "inspect", "-S", f"paths.base_model={tmp_path / 'none'}"]) == 0
    out = capsys.readouterr().out
    assert "embedded (llama)" in out and "'<|im_end|>' / '<|im_end|>'" in out and "not added" in out


def test_a_gemma2_run_past_its_sliding_window_is_refused_at_base_model(tmp_path):
    """Measured in the matrix: past the window, the KV-cache export fails and prefix parity breaks; so the
    base_model stage refuses it in one line (and model inspect says so), before anything trains."""
    from components.core.errors import ConfigError
    from components.data.datagen import generate_rows
    from components.inspect.model import inspect_model
    from components.stages import base_model
    from families import build_family

    folder = build_family("gemma2", tmp_path / "g", [r["question"] for r in generate_rows()], sliding_window=32)
    p = tiny_params(tmp_path, folder, [f"model.source={folder}"])
    with pytest.raises(ConfigError, match="sliding window of 32 positions.*lower prepare.max_length_cap to 20"):
        base_model(p)
    assert "REFUSED at the base_model stage" in inspect_model(p)["notes"][0]
    ok = tiny_params(tmp_path, folder, [f"model.source={folder}", "prepare.max_length=16"])
    assert base_model(ok)["architecture"] == "Gemma2ForCausalLM"
