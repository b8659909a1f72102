"""`peftpipe data inspect`'s training plan: steps from epochs, and under a budget the steps that fit a measured rate."""

from conftest import ROOT

from components.config.params import load_params
from components.inspect.data import training_plan


def test_plan_steps_epochs_and_budget():
    lengths = [40 + i % 30 for i in range(320)]
    p = load_params(ROOT / "params.yaml", ["train.batch_size=16"])
    plan = training_plan(lengths, p, None)
    assert plan["steps"] == 20 and plan["epochs"] == 1.0 and plan["estimate_s"] is None
    rate = {"s_per_token": 0.01, "from": "m.json", "method": "lora", "precision": "fp32"}
    timed = training_plan(lengths, p, rate)
    assert timed["estimate_s"] == round(0.01 * timed["computed_tokens"], 1)
    q = load_params(ROOT / "params.yaml", ["train.batch_size=16", "train.budget_minutes=1"])
    fit = training_plan(lengths, q, rate)  # 60 s at 0.01 s a token: 6,000 tokens, a few steps of ~16 x 69
    assert 1 <= fit["steps"] < 20 and fit["estimate_s"] <= 60
