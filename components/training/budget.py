"""train.budget_minutes: as many steps as fit the time, the learning-rate schedule set for them.

The first steps are timed; a step's time is modelled as proportional to the tokens it computes (rows x the
longest row, or the packed sum), which the batch schedule knows for every future step. The plan is the most
steps (at most train.steps) whose predicted time fits what is left of the budget; it is made after PROBE_STEPS
steps and made again at the steps predicted to be a quarter, half and three quarters of the way into the budget,
each time at the rate of every step measured so far (steps slow down as a machine warms or fills; steps, not clock
readings, decide when: the processes of a data-parallel run plan together). The plan is written
beside the checkpoints (`budget.json`, keyed by what the run is made from), so a resumed run keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.core.atomic import atomic_write_json

PROBE_STEPS = 4  # steps timed before the first plan (the first one, with the allocator's warm-up, is left out)
REPLAN_AT = (0.25, 0.5, 0.75)  # fractions of the budget after which the plan is made again


def step_cost(lengths: list[int], idx: list[int], packed: bool) -> int:
    """Tokens a step computes: its rows padded to the longest, or their sum when packed."""
    return sum(lengths[i] for i in idx) if packed else len(idx) * max(lengths[i] for i in idx)


def seconds_per_token(times: list[float], costs: list[int]) -> float:
    """Measured seconds per computed token; the first step is left out when there are others."""
    if len(times) > 1:
        times, costs = times[1:], costs[1:]
    return sum(times) / max(1, sum(costs))


def fit_steps(done: int, elapsed_s: float, budget_s: float, rate: float, future_costs: list[int], cap: int) -> int:
    """The total steps: `done` plus the future steps (costs in schedule order) whose predicted time fits what is
    left of the budget; at least done + 1 (unless that passes `cap`), at most `cap`."""
    left, total = budget_s - elapsed_s, done
    for c in future_costs:
        if total >= cap or left < rate * c:
            break
        left -= rate * c
        total += 1
    return min(cap, max(total, done + 1))


def replan_step(done: int, elapsed_s: float, budget_s: float, rate: float, future_costs: list[int], at: float) -> int:
    """The step at which the predicted time reaches the fraction `at` of the budget: a step count, so that every
    process of a data-parallel run plans again at the same step."""
    t, step = elapsed_s, done
    for c in future_costs:
        if t >= at * budget_s:
            break
        t += rate * c
        step += 1
    return step


def read_plan(ckpt_root: Path, fingerprint: str) -> dict | None:
    path = ckpt_root / "budget.json"
    if not path.exists():
        return None
    plan = json.loads(path.read_text())
    return plan if plan.get("fingerprint") == fingerprint else None


def write_plan(ckpt_root: Path, fingerprint: str, plan: dict) -> None:
    atomic_write_json(ckpt_root / "budget.json", {"fingerprint": fingerprint, **plan})
