import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.training import batches
from components.training import train as train_mod
from components.training.health import Health
from components.training.schedule import batch_schedule
from components.model.base_model import materialise
from components.data.prepare import run_prepare
from components.data.validate import run_validate
from conftest import crash_training_at, tiny_params


@pytest.fixture(scope="module")
def prepared(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepared")
    p = tiny_params(tmp, tiny_model_dir)
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared)
    return tmp, p


def train(p, out, extra=None):
    q = p.model_copy(deep=True)
    for k, v in (extra or {}).items():
        node = q.train
        *parents, leaf = k.split(".")
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, v)
    return train_mod.run_train(q, p.paths.base_model, p.paths.prepared, out / "train", out / "ckpt", progress=False)


def adapter(out):
    return load_file(out / "train" / "adapter" / "adapter_model.safetensors")


TIMINGS = ("wall_s", "tokens_per_s", "seconds", "peak_rss_mb")


def without_timings(d):
    """Metrics minus the figures that measure the machine rather than the model."""
    if isinstance(d, dict):
        return {k: without_timings(v) for k, v in d.items() if not any(k.endswith(t) for t in TIMINGS)}
    return d


def test_lora_learns_and_same_params_give_identical_weights_and_metrics(prepared, tmp_path):
    """Determinism: two runs with the same params and seed give bit-identical adapters, curves, answers and metrics."""
    from components.evaluation.evaluate import run_evaluate

    _, p = prepared
    m1 = train(p, tmp_path / "a")
    m2 = train(p, tmp_path / "b")
    assert m1["final_loss"] < m1["first_loss"] - 0.05  # a random tiny base: attention-only LoRA moves it slowly
    assert m1["trainable_params"] < m1["total_params"] / 5
    a, b = adapter(tmp_path / "a"), adapter(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert without_timings(m1) == without_timings(m2)
    assert (tmp_path / "a" / "train_curve.tsv").read_bytes() == (tmp_path / "b" / "train_curve.tsv").read_bytes()
    e1, e2 = (run_evaluate(p, "tuned", p.paths.base_model, p.paths.prepared, tmp_path / d / "train", tmp_path / d / "eval")
              for d in "ab")
    assert without_timings(e1) == without_timings(e2) and e1["rouge-l"] == e2["rouge-l"]
    assert (tmp_path / "a" / "eval" / "predictions.jsonl").read_bytes() == (tmp_path / "b" / "eval" / "predictions.jsonl").read_bytes()
    curve = (tmp_path / "a" / "train_curve.tsv").read_text().splitlines()
    assert curve[0] == "step\tloss\tlr" and len(curve) == 1 + p.train.steps


def test_resume_after_crash_equals_uninterrupted_run(prepared, tmp_path, monkeypatch):
    _, p = prepared
    train(p, tmp_path / "clean")
    real_collate = crash_training_at(monkeypatch, 16)
    with pytest.raises(KeyboardInterrupt):
        train(p, tmp_path / "crash")
    monkeypatch.setattr(batches, "collate", real_collate)
    # a partial checkpoint (no optimizer state) must be skipped, not loaded
    partial = tmp_path / "crash" / "ckpt" / "step-000999"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"step": 999, "fingerprint": "x"}))
    metrics = train(p, tmp_path / "crash")
    assert metrics["resumed_at"] == 10
    # the dvclive log (read by `dvc plots`, DVC Studio) holds every step once, as the uninterrupted run's does
    live = [(tmp_path / d / "train_live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
            for d in ("clean", "crash")]
    assert live[0] == live[1] and [int(x.split("\t")[0]) for x in live[1][1:]] == list(range(1, p.train.steps + 1))
    a, b = adapter(tmp_path / "clean"), adapter(tmp_path / "crash")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_changed_data_never_resumes_a_stale_checkpoint(prepared, tmp_path, monkeypatch, capsys):
    """One training answer changed to a wrong fact of the same length (as a user edits data/qa.jsonl): the train
    stage starts at step 0 and says in one line why the checkpoint was not used; the finished run keeps none."""
    from components.data.prepare import in_test_split, read_jsonl

    _, p = prepared
    assert p.train.checkpoint_every < p.train.steps
    real = crash_training_at(monkeypatch, 15)  # a checkpoint at step 10, then a crash
    with pytest.raises(KeyboardInterrupt):
        train(p, tmp_path)
    monkeypatch.setattr(batches, "collate", real)
    assert (tmp_path / "ckpt" / "step-000010").is_dir()

    rows = read_jsonl(Path(p.paths.validated) / "train.jsonl")
    i = next(i for i, r in enumerate(rows) if not in_test_split(r["question"], p.prepare.split_seed, p.prepare.test_fraction)
             and any(c.isdigit() for c in r["answer"]))
    old = rows[i]["answer"]
    d = next(c for c in old if c.isdigit())
    rows[i]["answer"] = old.replace(d, str((int(d) + 6) % 10), 1)  # same length, another fact
    assert len(rows[i]["answer"]) == len(old) and rows[i]["answer"] != old
    edited = tmp_path / "validated"
    edited.mkdir()
    (edited / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    q = p.model_copy(deep=True)
    q.paths.prepared = str(tmp_path / "prepared")
    run_prepare(edited, p.paths.base_model, p.prepare, q.paths.prepared)
    capsys.readouterr()
    m = train(q, tmp_path)
    said = capsys.readouterr().out
    assert m["resumed_at"] == 0
    assert "not resuming" in said and "the prepared data's content" in said and "resuming from" not in said
    assert not list((tmp_path / "ckpt").glob("step-*"))  # a finished run's checkpoints seed no other run
    # the user's case: a finished run, then the data changes back: step 0 again, and the line says why
    again = train(p, tmp_path)
    said = capsys.readouterr().out
    assert again["resumed_at"] == 0 and "the last run finished" in said and "starting at step 0" in said


def test_other_params_or_base_weights_are_named_when_a_checkpoint_is_skipped(prepared, tmp_path):
    from components.training.checkpoints import _what_changed, made_from

    _, p = prepared
    parts = made_from(p, Path(p.paths.prepared), Path(p.paths.base_model), "fp32")
    assert _what_changed(parts, parts) == "it was written by an older peftpipe"
    lr = {**parts, "train": {**parts["train"], "lr": 0.5}}
    assert _what_changed(parts, lr) == "train.lr"
    assert _what_changed(parts, {**parts, "base_model_sha256": "0" * 64, "precision": "bf16"}) == \
        "the base model's weights, the precision"
    # the base model's hash is its content: one changed weight byte changes it
    import shutil

    base = tmp_path / "base"
    shutil.copytree(p.paths.base_model, base)
    weights = base / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    assert made_from(p, Path(p.paths.prepared), base, "fp32")["base_model_sha256"] != parts["base_model_sha256"]


def test_full_fine_tuning_saves_whole_model(prepared, tmp_path):
    _, p = prepared
    m = train(p, tmp_path, {"method": "full", "steps": 30, "full.lr": 3e-3})
    assert m["trainable_params"] == m["total_params"]
    assert m["final_loss"] < 0.8 * m["first_loss"]
    assert (tmp_path / "train" / "model" / "model.safetensors").exists()


def test_batch_schedule_groups_lengths_and_covers_data():
    lengths = [5 + (i * 7) % 40 for i in range(320)]
    sched = batch_schedule(lengths, 8, 40, seed=1)
    assert len(sched) == 40 and all(len(b) == 8 for b in sched)
    assert len({i for b in sched for i in b}) == 320  # one epoch sees every row once
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in sched) / len(sched)
    assert spread < 10  # similar lengths batched together
    assert sched == batch_schedule(lengths, 8, 40, seed=1)


def test_health_detects_nan_and_spikes():
    h = Health(factor=3.0, warmup=5)
    assert all(h.check(i + 1, v) for i, v in enumerate([2.0, 1.8, 1.5, 1.2, 1.0, 0.9, 0.8]))
    assert h.check(8, 1.9)  # noisy but below 3x the running mean
    assert not h.check(9, 9.0) and h.problem["step"] == 9 and "spike" in h.problem["reason"]
    h = Health(factor=3.0, warmup=5)
    assert h.check(1, 2.0) and not h.check(2, float("nan"))
    assert h.problem["reason"] == "non-finite loss"


def test_diverging_run_stops_and_keeps_best_weights(prepared, tmp_path):
    _, p = prepared
    m = train(p, tmp_path, {"lr": 1e30, "warmup_steps": 0, "spike_warmup": 3, "log_every": 1})
    health = m["health"]
    assert health["ok"] is False and health["step"] < p.train.steps
    assert health["best_step"] == 0  # only the untouched weights had a finite loss
    # what was trained, not what was planned: the stopping step's update never happened
    assert m["steps"] == p.train.steps and m["steps_done"] == health["step"] - 1
    assert m["epochs"] < p.train.steps * p.train.batch_size / m["train_rows"]
    weights = adapter(tmp_path)
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_health_catches_a_warmup_blow_up_that_lifts_the_running_mean():
    """The curve of a P-Tuning v2 run at lr 1e-2 on dolly_open_qa (recipes sweep): a high first loss, then a
    blow-up at step 9 of a 10-step warmup. Its blown-up losses lifted the window's mean enough that the old
    reference (the mean) never flagged it and the run 'finished healthy' at a loss of ~9."""
    h = Health(factor=3.0, warmup=10)
    curve = [5.61, 2.64, 2.96, 2.85, 3.09, 2.91, 3.58, 3.32, 9.92, 10.82]
    assert all(h.check(i + 1, v) for i, v in enumerate(curve))  # not armed yet
    assert not h.check(11, 10.10) and h.problem["step"] == 11 and "spike" in h.problem["reason"]


def test_health_catches_a_blow_up_during_warmup():
    h = Health(factor=3.0, warmup=5)
    assert all(h.check(i + 1, v) for i, v in enumerate([1.2, 4.0, 9.0, 11.0, 10.0]))  # not armed yet
    assert not h.check(6, 10.5) and h.problem["step"] == 6  # 10.5 > 3 x first loss 1.2


def test_health_catches_a_collapse_to_a_uniform_guess():
    """The first steps of P-Tuning v2 at lr 3e-2 on dolly_open_qa (recipes grid, fp32, batch 16, vocabulary 49,152):
    a blow-up inside the warmup to about ln(49,152) = 10.8, never 3x the first loss, so the spike rule alone let
    the sweep's cell 'finish healthy' at a loss of 10.75 (ROUGE-L 2.9); step 11's loss was 16.76."""
    curve = [5.609, 2.640, 3.004, 6.096, 10.541, 10.125, 11.623, 10.899, 14.991, 12.107]
    spike_only = Health(factor=3.0, warmup=10)
    assert all(spike_only.check(i + 1, v) for i, v in enumerate(curve + [10.7] * 20))  # the miss
    h = Health(factor=3.0, warmup=10, vocab_size=49152)
    assert all(h.check(i + 1, v) for i, v in enumerate(curve))  # not armed yet
    assert not h.check(11, 16.76) and h.problem["step"] == 11 and "collapsed" in h.problem["reason"]


def test_health_collapse_rule_spares_learning_and_high_but_falling_losses():
    for random_start in ([10.9, 10.6, 10.2, 9.8, 9.5, 9.1, 8.8, 8.5, 8.3, 8.0, 7.9, 7.7, 7.6, 7.4],  # learning
                         [10.80, 10.83, 10.79, 10.84, 10.82, 10.85, 10.81, 10.83, 10.86, 10.84]):  # flat at uniform
        h = Health(factor=3.0, warmup=5, vocab_size=49152)
        assert all(h.check(i + 1, v) for i, v in enumerate(random_start)) and h.problem is None
    noisy = [2.9, 2.4, 3.1, 2.2, 2.8, 3.3, 2.6, 2.5, 3.0, 2.7, 2.6, 3.2]  # a pretrained model, noisy batches
    h = Health(factor=3.0, warmup=5, vocab_size=49152)
    assert all(h.check(i + 1, v) for i, v in enumerate(noisy)) and h.problem is None
