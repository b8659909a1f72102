"""Untrusted files and concurrent runs: pickle weights refused, one pipeline run per project at a time."""

import os

import pytest

from components.model.base_model import ModelSourceError, materialise
from flows.run import run_lock
from peftpipe import cli
from components.config.params import ModelConfig


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
    with run_lock(tmp_path / ".peftpipe.lock"):
        assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert "another peftpipe run is in progress" in err and f"pid {os.getpid()}" in err
    assert "Traceback" not in err
    with run_lock(tmp_path / ".peftpipe.lock"):  # released: the next run may take it
        pass


@pytest.mark.parametrize("override,key", [
    ("data.path=../elsewhere/qa.jsonl", "data.path"),
    ("data.test_path=/etc/passwd", "data.test_path"),
    ("paths.bundle=/tmp/peftpipe-escape", "paths.bundle"),
    ("paths.train=artifacts/../../out", "paths.train"),
    ("registry.deploy_dir=/tmp/peftpipe-deployments", "registry.deploy_dir"),
])
def test_paths_outside_the_project_are_refused(tmp_path, monkeypatch, capsys, override, key):
    import shutil

    from conftest import ROOT

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    before = (tmp_path / "params.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "-S", override]) == 1
    err = capsys.readouterr().err
    assert f"{key} " in err and "outside the project" in err and "allow_outside_project" in err
    assert (tmp_path / "params.yaml").read_text() == before  # nothing recorded for a refused run
    assert cli.main(["stage", "validate", "-S", override]) == 1


def test_a_symlink_out_of_the_project_is_refused(tmp_path):
    from components.config.params import ConfigError, check_confined, load_params

    (tmp_path / "proj").mkdir()
    (tmp_path / "outside.jsonl").write_text("{}\n")
    (tmp_path / "proj" / "data.jsonl").symlink_to(tmp_path / "outside.jsonl")
    p = load_params(tmp_path / "none.yaml", ["data.path=data.jsonl"])
    with pytest.raises(ConfigError, match="data.path 'data.jsonl' resolves to .*outside the project"):
        check_confined(p, tmp_path / "proj")
    check_confined(load_params(tmp_path / "none.yaml", ["data.path=data.jsonl", "allow_outside_project=true"]),
                   tmp_path / "proj")


def test_registry_commands_refuse_a_deploy_dir_outside_the_project(tmp_path, monkeypatch, capsys):
    """promote, rollback and serve write under registry.deploy_dir: it is confined like every other path."""
    import yaml

    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["registry"]["deploy_dir"] = "../deployments"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    for argv in (["promote", "--to", "staging"], ["rollback"], ["serve"]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "registry.deploy_dir '../deployments' resolves to" in err and "outside the project" in err, argv
