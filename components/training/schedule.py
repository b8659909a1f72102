"""The batch schedule: which train rows each step takes (length-grouped or random, a row count or a token budget a
step), and how many steps train.steps, train.epochs or a time budget make."""

from __future__ import annotations

import math

import numpy as np


def batch_schedule(lengths: list[int], batch_size: int, steps: int, seed: int, group: bool = True,
                   tokens: int | None = None, packed: bool = False) -> list[list[int]]:
    """Index lists for every step: shuffle, group similar lengths (less padding), shuffle batches.

    group=False: plain random batches (consecutive slices of each epoch's permutation).
    tokens: a token budget per step instead of `batch_size` rows: rows join a batch while the tokens it
    computes (rows x its longest row; packed: their sum) stay within the budget; a row longer than the
    budget is a batch of its own."""
    rng = np.random.default_rng(seed)
    n = len(lengths)
    if tokens is not None:  # rows a batch holds at the median length: sizes the length-sorted chunks
        batch_size = max(1, tokens // max(1, int(np.median(lengths))))
    bs = min(batch_size, n)
    out: list[list[int]] = []
    while len(out) < steps:
        perm = rng.permutation(n)
        if tokens is not None:
            if group:
                mega = bs * 16
                perm = [i for s in range(0, n, mega) for i in sorted(perm[s : s + mega].tolist(), key=lambda i: -lengths[i])]
            batches = fill_budget([int(i) for i in perm], lengths, tokens, packed)
            out += [batches[b] for b in (rng.permutation(len(batches)) if group else range(len(batches)))]
            continue
        if not group:
            out += [perm[j : j + bs].tolist() for j in range(0, n - bs + 1 if n >= bs else 1, bs)]
            continue
        mega = bs * 16
        batches = []
        for s in range(0, n - bs + 1 if n >= bs else 1, mega):
            chunk = sorted(perm[s : s + mega].tolist(), key=lambda i: -lengths[i])
            batches += [chunk[j : j + bs] for j in range(0, len(chunk) - bs + 1, bs)]
        for b in rng.permutation(len(batches)):
            out.append(batches[b])
    return out[:steps]


MAX_BUDGET_EPOCHS = 20  # train.budget_minutes with neither steps nor epochs set: at most this many passes


def steps_for_epochs(lengths: list[int], cfg, seed: int, epochs: float) -> int:
    """The steps whose batches hold `epochs` x the train rows, at the schedule's mean rows per step."""
    sched = batch_schedule(lengths, cfg.batch_size, len(lengths), seed, cfg.group_by_length, cfg.batch_tokens,
                           cfg.packing)  # at least one pass: every batch holds a row or more
    return max(1, math.ceil(epochs * len(lengths) / float(np.mean([len(b) for b in sched]))))


def planned_steps(cfg, lengths: list[int], seed: int) -> int:
    """train.steps; else the steps of train.epochs passes (null: 1, or MAX_BUDGET_EPOCHS under a time budget, which
    then ends the run)."""
    if cfg.steps is not None:
        return cfg.steps
    return steps_for_epochs(lengths, cfg, seed, cfg.epochs or (MAX_BUDGET_EPOCHS if cfg.budget_minutes else 1.0))


def fill_budget(order: list[int], lengths: list[int], tokens: int, packed: bool = False) -> list[list[int]]:
    """`order` cut into consecutive batches, each as many rows as fit `tokens` computed tokens
    (rows x the longest, or the sum when packed); a row over the budget alone."""
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = total = 0
    for i in order:
        n = lengths[i]
        cost = total + n if packed else (len(cur) + 1) * max(longest, n)
        if cur and cost > tokens:
            batches.append(cur)
            cur, longest, total = [], 0, 0
        cur.append(i)
        longest, total = max(longest, n), total + n
    if cur:
        batches.append(cur)
    return batches
