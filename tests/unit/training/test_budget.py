"""train.budget_minutes on the tiny model, against a fake clock on which a step costs its computed tokens
(so the plan's arithmetic is checked exactly, and no test is timed)."""

import time
from types import SimpleNamespace

import pytest
import torch

from components.training import batches, budget
from components.training import loss as loss_mod
from components.training import train as train_mod
from conftest import crash_training_at
from test_train import adapter, prepared, train  # noqa: F401  (the prepared tiny data set, and a train run with overrides)

RATE = 0.01  # fake seconds per computed token
BUDGET_MIN = 1.6


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 0.0}
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: now["t"], time=time.time))
    real = loss_mod.lm_loss

    def costs_its_tokens(model, batch, autocast=None):
        now["t"] += RATE * batch["input_ids"].numel()
        return real(model, batch, autocast)

    monkeypatch.setattr(loss_mod, "lm_loss", costs_its_tokens)
    return now


def curve(out):
    return [line.split("\t") for line in (out / "train_curve.tsv").read_text().splitlines()[1:]]


def test_fit_steps_takes_the_steps_that_fit_and_respects_the_cap():
    assert budget.fit_steps(4, 2.0, 10.0, 0.01, [100] * 50, cap=1000) == 12  # 8 s left, 1 s a step
    assert budget.fit_steps(4, 2.0, 10.0, 0.01, [100] * 50, cap=9) == 9
    assert budget.fit_steps(4, 2.0, 10.0, 0.01, [50, 300, 50], cap=1000) == 7  # in order: a long step still counts
    assert budget.fit_steps(4, 9.9, 10.0, 0.01, [100] * 50, cap=1000) == 5  # over budget: at least one more step
    assert budget.seconds_per_token([9.0, 1.0, 3.0], [100, 100, 300]) == pytest.approx(0.01)  # first step left out


def test_a_budgeted_run_ends_on_time_with_its_schedule_completed(prepared, tmp_path, clock):  # noqa: F811
    _, p = prepared
    m = train(p, tmp_path, {"budget_minutes": BUDGET_MIN, "steps": 1000, "checkpoint_every": 5})
    plans = m["budget"]["plans"]
    assert plans[0]["after_steps"] == budget.PROBE_STEPS and len(plans) == 1 + len(budget.REPLAN_AT)  # timed, replanned
    assert all(x["elapsed_s"] >= at * 60 * BUDGET_MIN for x, at in zip(plans[1:], budget.REPLAN_AT))
    wall = m["budget"]["train_wall_s"]
    assert 0.9 * 60 * BUDGET_MIN <= wall <= 60 * BUDGET_MIN  # the fake clock: exactly what the steps cost
    rows = curve(tmp_path)
    assert len(rows) == m["steps"] > budget.PROBE_STEPS and float(rows[-1][2]) == 0.0  # the cosine ran to its end
    assert m["steps"] < 1000


def test_steps_that_slow_down_still_end_on_time(prepared, tmp_path, clock, monkeypatch):  # noqa: F811
    """A machine that slows as it runs (thermal limits, a neighbour): from a third of the budget on, a token costs
    1.6x. Planned only early, the run would overshoot by about a third; the later plans bring it within 10%."""
    _, p = prepared
    monkeypatch.setitem(globals(), "RATE", RATE / 10)  # finer steps than the other tests': about 60 fit
    costs_its_tokens = loss_mod.lm_loss

    def slows_down(model, batch, autocast=None):
        if clock["t"] > 60 * BUDGET_MIN / 3:
            clock["t"] += 0.6 * RATE * batch["input_ids"].numel()
        return costs_its_tokens(model, batch, autocast)

    monkeypatch.setattr(loss_mod, "lm_loss", slows_down)
    m = train(p, tmp_path, {"budget_minutes": BUDGET_MIN, "steps": 1000, "checkpoint_every": 1000})
    wall = m["budget"]["train_wall_s"]
    assert 0.9 * 60 * BUDGET_MIN <= wall <= 1.1 * 60 * BUDGET_MIN, (wall, m["budget"]["plans"])
    assert float(curve(tmp_path)[-1][2]) == 0.0  # the schedule still completed


def test_the_step_cap_and_a_resumed_run_keep_their_plan(prepared, tmp_path, clock, monkeypatch):  # noqa: F811
    _, p = prepared
    capped = train(p, tmp_path / "cap", {"budget_minutes": BUDGET_MIN, "steps": 12})
    assert capped["steps"] == 12  # train.steps caps what the budget would allow
    extra = {"budget_minutes": BUDGET_MIN, "steps": 1000, "checkpoint_every": 5}
    clean = train(p, tmp_path / "clean", extra)
    real = crash_training_at(monkeypatch, clean["steps"] - 2)  # after the second plan and a checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(p, tmp_path / "crash", extra)
    monkeypatch.setattr(batches, "collate", real)
    resumed = train(p, tmp_path / "crash", extra)
    assert resumed["resumed_at"] > 0 and resumed["budget"]["kept_from_interrupted_run"]
    assert resumed["steps"] == clean["steps"]
    a, b = adapter(tmp_path / "clean"), adapter(tmp_path / "crash")
    assert all(torch.equal(a[k], b[k]) for k in a)
