"""Untrusted files and concurrent runs: pickle weights refused, one pipeline run per project at a time."""

import os

import pytest

from components.base_model import ModelSourceError, materialise
from peftpipe import cli
from peftpipe.config import ModelConfig


def test_pickle_weights_are_refused_unless_allowed(tiny_model_dir, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    src = tmp_path / "pickled"  # the same model with its weights as a pickle file, as older checkpoints ship
    shutil.copytree(tiny_model_dir, src, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(tiny_model_dir / "model.safetensors"), src / "pytorch_model.bin")
    assert (src / "pytorch_model.bin").exists() and not list(src.glob("*.safetensors"))
    with pytest.raises(ModelSourceError, match="no safetensors weights.*allow_pickle"):
        materialise(ModelConfig(source=str(src)), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    info = materialise(ModelConfig(source=str(src), allow_pickle=True), tmp_path / "out")
    assert info["parameters"] > 0 and (tmp_path / "out" / "model.safetensors").exists()


def test_second_run_in_the_same_project_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    with cli.run_lock(tmp_path / ".peftpipe.lock"):
        assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert "another peftpipe run is in progress" in err and f"pid {os.getpid()}" in err
    assert "Traceback" not in err
    with cli.run_lock(tmp_path / ".peftpipe.lock"):  # released: the next run may take it
        pass
