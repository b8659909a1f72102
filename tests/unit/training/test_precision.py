"""Devices and precision: auto decided by a timed step (cached), the bf16 and fp16 paths on any CPU, clear errors
for devices and QLoRA where they cannot run."""

import json
from pathlib import Path

import pytest

from conftest import ROOT

from components.core import runtime
from components.core.errors import ConfigError
from components.training import precision
from test_train import prepared, train  # noqa: F401  (the prepared tiny data set, and a train run with overrides)


def test_auto_times_both_precisions_at_the_runs_shape_and_caches_the_choice(prepared, tmp_path, monkeypatch):  # noqa: F811
    """On a CPU with native bf16 (faked here, so the path runs on any CPU) auto times fp32 and bf16 steps, picks
    bf16 only at >= 1.15x, records both timings, and a second run reads the cache; without native bf16, fp32."""
    _, p = prepared
    monkeypatch.setenv("PEFTPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "load_average", lambda: 0.0)  # a quiet machine (the suite's workers share it)
    m = train(p, tmp_path / "a", {"precision": "auto", "steps": 2})
    c = m["precision_choice"]
    assert c["how"] == "measured" and c["fp32_step_s"] > 0 and c["bf16_step_s"] > 0 and c["batch_tokens"] > 0
    assert m["precision"] == ("bf16" if c["bf16_speedup"] >= precision.SPEEDUP else "fp32")
    assert json.loads(precision.cache_file().read_text())
    again = train(p, tmp_path / "b", {"precision": "auto", "steps": 2})
    assert again["precision_choice"]["how"].startswith("measured before") and again["precision"] == m["precision"]
    cache = json.loads(precision.cache_file().read_text())  # an entry from before the load was recorded: timed again
    precision.cache_file().write_text(json.dumps({k: {x: y for x, y in v.items() if x != "load_average_1m"}
                                                  for k, v in cache.items()}))
    assert train(p, tmp_path / "b2", {"precision": "auto", "steps": 2})["precision_choice"]["how"] == "measured"
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda: False)
    plain = train(p, tmp_path / "c", {"precision": "auto", "steps": 2})
    assert plain["precision"] == "fp32" and "no native bf16" in plain["precision_choice"]["how"]


def test_a_timing_taken_on_a_busy_machine_decides_that_run_only(prepared, tmp_path, monkeypatch):  # noqa: F811
    """Timings taken while other work shares the cores measure the contention: used once, never cached."""
    import os

    _, p = prepared
    monkeypatch.setenv("PEFTPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "load_average", lambda: 2.0 * (os.cpu_count() or 1))
    for run in ("a", "b"):
        m = train(p, tmp_path / run, {"precision": "auto", "steps": 2})
        assert m["precision_choice"]["how"].startswith("measured, not cached: 1-minute load average"), m["precision_choice"]
    assert not precision.cache_file().exists()


def test_the_timing_leaves_the_run_as_it_was(prepared, tmp_path, monkeypatch):  # noqa: F811
    """Measuring runs forward and backward but restores the RNG and drops the gradients: an auto run that chose
    fp32 trains exactly as a run with fp32 set."""
    _, p = prepared
    monkeypatch.setenv("PEFTPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "SPEEDUP", 1e9)  # bf16 can never win: auto measures, then takes fp32
    monkeypatch.setattr(precision, "load_average", lambda: 0.0)  # a quiet machine, whatever else shares it
    auto = train(p, tmp_path / "auto", {"precision": "auto", "steps": 6})
    train(p, tmp_path / "fixed", {"precision": "fp32", "steps": 6})
    assert auto["precision_choice"]["how"] == "measured" and auto["precision"] == "fp32"
    assert (tmp_path / "auto" / "train_curve.tsv").read_text() == (tmp_path / "fixed" / "train_curve.tsv").read_text()


def test_bf16_keeps_frozen_weights_in_bf16_and_lands_near_fp32(prepared, tmp_path):  # noqa: F811
    """bf16 autocast runs on any CPU (emulated where there is no native support). LoRA's frozen weights are stored
    in bf16 once; the adapter stays fp32. The eval loss lands within bf16 noise of the fp32 run's."""
    from components.evaluation.evaluate import eval_loss, prompts_for, test_samples
    from components.model.trained import load_trained

    _, p = prepared
    f32 = train(p, tmp_path / "f32", {"precision": "fp32", "steps": 20})
    b16 = train(p, tmp_path / "b16", {"precision": "bf16", "steps": 20})
    assert b16["precision"] == "bf16" and b16["frozen_bf16_tensors"] > 0 and f32["frozen_bf16_tensors"] == 0
    losses = {}
    for name in ("f32", "b16"):
        model, tok, _ = load_trained(p.paths.base_model, tmp_path / name / "train")
        samples = test_samples(p.paths.prepared, 12, p.prepare.split_seed)
        losses[name] = eval_loss(model, tok, samples, prompts_for(samples, tok, None, p.prepare.system_prompt), 8)
    # bf16 has 8 mantissa bits: the same 20 steps end within a few percent (measured: well under 5%)
    assert losses["b16"] == pytest.approx(losses["f32"], rel=0.05), losses
    assert b16["final_loss"] < b16["first_loss"]


def test_fp16_trains_through_a_grad_scaler(prepared, tmp_path):  # noqa: F811
    _, p = prepared
    m = train(p, tmp_path, {"precision": "fp16", "steps": 4})
    curve = [float(x.split("\t")[1]) for x in (tmp_path / "train_curve.tsv").read_text().splitlines()[1:]]
    assert m["precision"] == "fp16" and len(curve) == 4 and all(x == x and x < 100 for x in curve)


def test_devices_and_qlora_refuse_clearly_where_they_cannot_run(monkeypatch):
    import torch

    from components.model.base_model import qlora_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto").type in ("cpu", "mps") and runtime.resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="train.device=cuda, but torch sees no CUDA device"):
        runtime.resolve_device("cuda")
    with pytest.raises(ConfigError, match="CUDA only"):
        qlora_options("lora", torch.device("cpu"))
    with pytest.raises(ConfigError, match="LoRA-family method"):  # refused by the config, before any model loads
        from components.config.params import load_params

        load_params(ROOT / "params.yaml", ["train.quantize_base=4bit", "train.method=prefix"])
    assert runtime.resolve_precision("bf16") == "bf16" and runtime.resolve_precision("auto", "mps") == "fp32"


def test_a_cuda_run_on_a_machine_without_one_fails_with_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    from conftest import ROOT
    from peftpipe.cli import main

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["stage", "train", "-S", "train.device=cuda"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.device=cuda" in err[0]
    assert not Path("artifacts/train").exists()


def test_the_cached_choice_is_per_cpu_kind_not_per_model_name(monkeypatch):
    """A VM reports one model name ("AMD EPYC") for CPU generations with different kernels, and a home directory
    (and its cache) can outlive the machine under it: a choice timed on one is not reused on another."""
    from transformers import LlamaConfig

    class Model:
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=512)

    monkeypatch.setattr(runtime, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    zen4 = precision.cache_key(Model(), "lora", 600, 2)
    assert precision.cache_key(Model(), "lora", 700, 2) == zen4  # the same shape bucket
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    assert precision.cache_key(Model(), "lora", 600, 2) != zen4
