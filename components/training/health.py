"""Training health: a non-finite loss, a spike or a collapse stops the run (the loop keeps the best weights so far)."""

from __future__ import annotations

import math


class Health:
    """Training health: NaN/inf loss or a spike stops training; the best weights so far are kept.

    A spike is a loss above the first loss and above `factor` x the lower of the first loss and the
    lower quartile of the previous 20 losses, checked once `warmup` steps have run. The quartile, not the
    mean, so that a run that blew up during warmup is still caught when the detector arms: its blown-up
    losses are in the window too, and they lift a mean (a P-Tuning v2 run at lr 1e-2 on dolly_open_qa went
    from 3.3 to 9.9 at step 9 of a 10-step warmup, with a first loss of 5.6, and trained on at ~9-12).

    A collapse is a plateau, not a spike: a run whose first loss was below `collapse` x ln(vocab_size) (the
    loss of a uniform guess over the vocabulary) and whose median over the last `window` losses is now above
    it (a P-Tuning v2 run at lr 3e-2 on dolly_open_qa: first loss 5.6, then 10-15 from step 5, never the 3x of a
    spike, near ln(49,152) = 10.8). A model that starts near the uniform loss (random weights) cannot collapse.
    """

    def __init__(self, factor: float, warmup: int, window: int = 20, vocab_size: int | None = None,
                 collapse: float = 0.8):
        self.factor, self.warmup, self.window = factor, warmup, window
        self.uniform = math.log(vocab_size) if vocab_size and vocab_size > 1 else None
        self.collapse = collapse
        self.history: list[float] = []
        self.problem: dict | None = None

    def check(self, step: int, value: float) -> bool:
        """Record a loss; False (and self.problem set) when training must stop."""
        if not math.isfinite(value):
            self.problem = {"reason": "non-finite loss", "step": step, "value": value}
        elif len(self.history) >= self.warmup:
            recent = sorted(self.history[-self.window:])
            first = self.history[0]
            ref = min(recent[len(recent) // 4], first)
            if value > self.factor * ref and value > first:
                self.problem = {"reason": f"loss spike above {self.factor:g}x the reference loss {ref:.4g}",
                                "step": step, "value": value}
            elif self.uniform is not None:
                window = sorted(self.history[-(self.window - 1):] + [value])
                median = window[len(window) // 2]
                floor = self.collapse * self.uniform
                if first < floor < median:
                    self.problem = {"reason": f"collapsed: median loss {median:.4g} over the last {len(window)} steps "
                                              f"(first loss {first:.4g}) is near a uniform guess's {self.uniform:.4g} "
                                              "(ln vocabulary size)", "step": step, "value": value}
        if self.problem:
            return False
        self.history.append(value)
        return True
