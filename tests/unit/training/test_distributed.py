"""Data-parallel training: `peftpipe stage train -S train.processes=2` (accelerate, DDP over gloo on CPU)
trains as one process does on the same global batches, and resumes a one-process checkpoint."""

import json
import os
import shutil
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from components.training import distributed
from components.model.base_model import materialise
from components.data.prepare import load_prepared, run_prepare
from components.training import batches
from components.training.schedule import batch_schedule
from components.data.validate import run_validate
from conftest import crash_training_at, tiny_params
from peftpipe.cli import main
from components.config.params import params_dict

BIN = Path(sys.executable).parent
# LoRA without dropout: the same global batch gives the same gradient however it is split over ranks
SETTINGS = ["train.method=lora", "train.lora.dropout=0.0", "train.steps=8", "train.batch_size=8",
            "train.warmup_steps=2", "train.checkpoint_every=4"]
# Measured on this machine: the 2-process curve is within 2e-7 (relative) of the 1-process one, the
# adapters within 1e-5 (absolute; largest weight 0.18). The differences are float summation order only:
# two partial token sums instead of one, and each shard padded to its own width (other matmul shapes),
# which Adam amplifies for weights with near-zero gradients. The bounds keep 50x / 10x headroom and stay
# far below what a wrong split gives: averaging the two shards' mean losses instead of normalising by
# the global token count moves the curve by 1e-4 relative and the adapter by 0.06.
CURVE_RTOL = 1e-5
ADAPTER_ATOL = 1e-4  # 0.5% of one Adam step at lr 0.02


def project(tmp: Path, name: str, p) -> Path:
    """A folder with a params.yaml whose train outputs are its own (base model and data shared)."""
    proj = tmp / name
    proj.mkdir()
    q = p.model_copy(deep=True)
    q.paths.train = str(proj / "train")
    (proj / "params.yaml").write_text(yaml.safe_dump({**params_dict(q), "allow_outside_project": True}, sort_keys=False))
    return proj


def stage_train(proj: Path, *overrides: str) -> dict:
    """`peftpipe stage train` in a subprocess (so that it can re-launch itself), from the project folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "LOCAL_RANK", "RANK")}
    cmd = [str(BIN / "peftpipe"), "stage", "train"] + [x for o in overrides for x in ("-S", o)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    print(f"{proj.name}: {' '.join(overrides) or 'processes=1'}: {time.perf_counter() - t0:.1f} s")
    return json.loads((proj / "metrics" / "train.json").read_text())


def curve(proj: Path) -> dict[int, float]:
    lines = (proj / "train_curve.tsv").read_text().splitlines()[1:]
    return {int(s): float(v) for s, v, _ in (line.split("\t") for line in lines)}


def adapter(proj: Path) -> dict:
    return load_file(proj / "train" / "adapter" / "adapter_model.safetensors")


def assert_adapters_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=ADAPTER_ATOL, msg=k)


def test_two_processes_match_one_and_resume_its_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    p = tiny_params(tmp_path, tiny_model_dir, SETTINGS)
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared)

    one = project(tmp_path, "one", p)
    monkeypatch.chdir(one)  # the one-process run goes through the same CLI, in this process (no second torch import)
    assert main(["stage", "train", "-S", "train.processes=1"]) == 0
    monkeypatch.chdir(tmp_path)
    m1 = json.loads((one / "metrics" / "train.json").read_text())
    two = project(tmp_path, "two", p)
    m2 = stage_train(two, "train.processes=2")

    assert m1["world_size"] == 1 and "tokens_per_rank" not in m1
    # both ranks ran, each on its own half (rank::2) of every step's batch
    lengths = load_prepared(p.paths.prepared)["train"]["length"]
    schedule = batch_schedule(lengths, 8, 8, p.seed)
    assert m2["world_size"] == 2
    assert m2["tokens_per_rank"] == [sum(lengths[i] for b in schedule for i in b[r::2]) for r in (0, 1)]
    assert m2["padding_fraction"] <= m1["padding_fraction"]  # shards are padded to their own width
    c1, c2 = curve(one), curve(two)
    assert list(c1) == list(c2) == list(range(1, 9))
    assert c1[8] != c1[1]  # the weights moved
    for step in c1:
        assert c2[step] == pytest.approx(c1[step], rel=CURVE_RTOL), f"step {step}: {c2[step]} vs {c1[step]}"
    assert_adapters_close(adapter(one), adapter(two))
    assert (two / "train" / "metrics.json").exists() and not list((two / "train_checkpoints").glob("step-*"))

    # a one-process run that crashed after its step-4 checkpoint; two processes resume it and end where `one` ended
    partial = project(tmp_path, "partial", p)
    real = crash_training_at(monkeypatch, 6)
    monkeypatch.chdir(partial)
    assert main(["stage", "train", "-S", "train.processes=1"]) == 130  # interrupted
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(batches, "collate", real)
    resumed = project(tmp_path, "resumed", p)
    shutil.copytree(partial / "train_checkpoints", resumed / "train_checkpoints")
    assert [d.name for d in (resumed / "train_checkpoints").glob("step-*")] == ["step-000004"]
    m3 = stage_train(resumed, "train.processes=2")
    assert m3["resumed_at"] == 4 and m3["world_size"] == 2
    c3 = curve(resumed)
    assert list(c3) == [5, 6, 7, 8]
    for step in c3:
        assert c3[step] == pytest.approx(c1[step], rel=CURVE_RTOL)
    assert_adapters_close(adapter(one), adapter(resumed))


def test_relaunch_only_outside_a_launched_group(monkeypatch):
    """processes > 1 re-runs the train stage under accelerate launch, unless already inside a group."""
    for k in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(k, raising=False)
    args = Namespace(name="train", set=["train.processes=3", "seed=1"], debug=True)
    params = Namespace(train=Namespace(processes=3, batch_size=8))
    calls = []
    monkeypatch.setattr(distributed.subprocess, "run", lambda cmd: calls.append(cmd) or Namespace(returncode=7))
    assert distributed.relaunch_stage(args, params) == 7
    cmd = calls[0]
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "3" and int(cmd[cmd.index("--main_process_port") + 1]) > 0
    assert cmd[cmd.index("-m", 3):] == ["-m", "peftpipe.cli", "--debug", "stage", "train",
                                         "-S", "train.processes=3", "-S", "seed=1"]
    assert distributed.relaunch_stage(Namespace(name="evaluate", set=None, debug=False), params) is None
    assert distributed.relaunch_stage(args, Namespace(train=Namespace(processes=1, batch_size=8))) is None
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert distributed.relaunch_stage(args, params) is None  # inside the group: train here
    assert distributed.world_size() == 3 and not distributed.is_main_process()
    assert len(calls) == 1
