"""Batches: a step's rows as tensors (padded to the longest row, or packed end to end), split into micro-batches
that fit train.micro_batch_tokens, and the label tokens a step holds."""

from __future__ import annotations

import numpy as np

from components.data.prepare import IGNORE_INDEX
from components.training.schedule import fill_budget


def collate(rows: list[dict], pad_id: int):
    """Rows padded to the longest one (pad_id; labels IGNORE_INDEX), with an attention mask over the real tokens."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _fill_rows(lengths: list[int], k: int) -> list[list[int]]:
    """Indices in k rows of about equal fill: longest first, each into the emptiest row."""
    rows: list[list[int]] = [[] for _ in range(k)]
    fill = [0] * k
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        j = fill.index(min(fill))
        rows[j].append(i)
        fill[j] += lengths[i]
    return rows


def pack(rows: list[dict], pad_id: int, capacity: int):
    """A step's examples end to end in rows of about `capacity` tokens, no padding between them: position ids
    restart at 0 for each example, which makes transformers build a block-diagonal causal mask (each example
    attends only to itself, as in its own row). Of the row counts from tokens // capacity up, the one that
    computes the fewest tokens (rows x the fullest row) wins. Each example's first label is masked: it would be
    the target of the previous example's last token. Same loss as `collate`."""
    import torch

    lengths = [len(r["input_ids"]) for r in rows]
    layouts = [_fill_rows(lengths, k) for k in range(max(1, sum(lengths) // capacity), len(rows) + 1)]
    cost = lambda lay: len(lay) * max(sum(lengths[i] for i in row) for row in lay)  # noqa: E731
    bins = [[rows[i] for i in row] for row in min(layouts, key=cost)]
    width = max(sum(len(r["input_ids"]) for r in b) for b in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.arange(width).repeat(len(bins), 1)  # the tail padding continues the last example's positions
    for b, members in enumerate(bins):
        at = 0
        for r in members:
            n = len(r["input_ids"])
            ids[b, at : at + n] = torch.tensor(r["input_ids"])
            labels[b, at + 1 : at + n] = torch.tensor(r["labels"][1:])
            pos[b, at:] = torch.arange(width - at)
            at += n
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def make_batch(rows: list[dict], pad_id: int, packing: bool, capacity: int):
    """(batch, real tokens): packed rows (`pack`) or rows padded to the longest (`collate`)."""
    batch = pack(rows, pad_id, capacity) if packing else collate(rows, pad_id)
    return batch, sum(len(r["input_ids"]) for r in rows)


def label_tokens(row: dict) -> int:
    """The tokens of a row whose next-token loss counts: prepare's answer_tokens (a row's first token, a
    template token, is never a label)."""
    return row["answer_tokens"]


def mean_label_tokens(rows: list[dict], schedule: list[list[int]]) -> float:
    """Label tokens per step, averaged over the schedule: train.loss_norm=tokens divides each step's summed loss by it."""
    return float(np.mean([sum(label_tokens(rows[i]) for i in step) for step in schedule])) if schedule else 1.0


def micro_batches(rows: list[dict], limit: int | None, packing: bool) -> list[list[dict]]:
    """A step's rows in consecutive groups whose computed tokens (rows x the longest; packing: their sum) fit
    `limit` (train.micro_batch_tokens; a row longer than it alone); None: one group."""
    if not limit:
        return [rows]
    return [[rows[i] for i in g] for g in fill_budget(range(len(rows)), [len(r["input_ids"]) for r in rows], limit, packing)]
