"""train.budget_minutes: as many steps as fit the time, the learning-rate schedule set for them.

The first steps are timed; a step's time is modelled as proportional to the tokens it computes (rows x the
longest row, or the packed sum), which the batch schedule knows for every future step. The plan is the most
steps (at most train.steps) whose predicted time fits what is left of the budget; it is made after PROBE_STEPS
steps and made again at the steps predicted to be a quarter, half and three quarters of the way into the budget,
each time at the rate of every step measured so far (steps slow down as a machine warms or fills; steps, not clock
readings, decide when: the processes of a data-parallel run plan together). The plan is written
beside the checkpoints (`budget.json`, keyed by what the run is made from), so a resumed run keeps it.
`plan_budget` makes a plan for a TrainRun; `set_steps` gives the run the batch and learning-rate schedules of a plan.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.core.atomic import atomic_write_json
from components.training import distributed as dist
from components.training.batches import mean_label_tokens
from components.training import checkpoints
from components.training.schedule import batch_schedule

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


def set_steps(run, total: int, done: int, schedule: list[list[int]] | None = None) -> None:
    """Train for `total` steps (`run`: the TrainRun): the batch schedule (the same first steps; `schedule`, when it
    is already built that long, is used) and the cosine schedule for that many, advanced to `done` steps."""
    import warnings

    from transformers import get_cosine_schedule_with_warmup

    cfg = run.params.train
    run.steps = total
    if schedule is not None and len(schedule) >= total:  # batch_schedule's first steps do not depend on its length
        run.schedule = schedule[:total]
    else:
        run.schedule = batch_schedule([r["length"] for r in run.rows], cfg.batch_size, total, run.params.seed,
                                      cfg.group_by_length, cfg.batch_tokens, cfg.packing)
    run.label_mean = mean_label_tokens(run.rows, run.schedule)
    run.sched = get_cosine_schedule_with_warmup(run.opt, min(cfg.warmup_steps, total // 2), total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(done):
            run.sched.step()


def plan_budget(run, done: int, elapsed: float, times: list[float], costs: list[int]) -> None:
    """train.budget_minutes: the steps that fit what is left of it, at the measured seconds per computed token."""
    cfg = run.params.train
    lengths = [r["length"] for r in run.rows]
    rate = seconds_per_token(times, costs)
    budget_s = 60 * cfg.budget_minutes
    n = max(len(run.schedule), done + 1)
    while True:  # lengthen the candidate schedule until the budget, or train.steps, ends it
        sched = batch_schedule(lengths, cfg.batch_size, n, run.params.seed, cfg.group_by_length, cfg.batch_tokens,
                               cfg.packing)
        future = [step_cost(lengths, b, cfg.packing) for b in sched[done:]]
        total = fit_steps(done, elapsed, budget_s, rate, future, run.cap)
        if total < n or n >= run.cap:
            break
        n = min(run.cap, 2 * n)
    made_before = len(run.budget.get("plans", []))
    again = (replan_step(done, elapsed, budget_s, rate, future[: total - done], REPLAN_AT[made_before])
             if made_before < len(REPLAN_AT) else None)  # None: this was the last plan
    if run.acc:  # every rank trains rank 0's plan
        total, again = dist.all_gather((total, again))[0]
    set_steps(run, total, done, sched)
    made = {"after_steps": done, "elapsed_s": round(elapsed, 2), "s_per_1k_tokens": round(1000 * rate, 4), "steps": total}
    run.budget = {"budget_minutes": cfg.budget_minutes, "steps": total, "plans": [*run.budget.get("plans", []), made],
                  **({"replan_at_step": again} if again is not None else {})}
    if run.main:
        write_plan(run.ckpt_root, checkpoints.fingerprint(run.parts), run.budget)
