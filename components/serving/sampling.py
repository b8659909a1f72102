"""Choosing the next token from logits: greedy at temperature 0, else temperature and nucleus (top-p) sampling."""

from __future__ import annotations

from typing import Callable

import numpy as np


def sampler(temperature: float, top_p: float = 1.0, seed: int | None = None) -> Callable[[np.ndarray], int] | None:
    """None (greedy: the decoder's own argmax) at temperature 0; else a seeded draw from the softmax of
    logits / temperature, restricted to the smallest set of tokens whose probability reaches top_p."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
    if temperature == 0:
        return None
    rng = np.random.default_rng(seed)

    def pick(logits: np.ndarray) -> int:
        z = logits.astype(np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if top_p < 1:
            order = np.argsort(-p, kind="stable")
            keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(rng.choice(p.size, p=p))

    return pick
