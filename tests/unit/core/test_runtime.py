"""Process-wide runtime: torch threads."""

import os

import torch

from components.core.runtime import set_threads


def test_threads_zero_takes_omp_num_threads_when_set_else_every_core(monkeypatch):
    before = torch.get_num_threads()
    share = (os.cpu_count() or 1) + 1  # differs from "every core" on any machine
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", str(share))
        assert set_threads(0) == share and torch.get_num_threads() == share
        assert set_threads(1) == 1  # train.threads set: it wins
        monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
        assert set_threads(0) == (os.cpu_count() or 1)
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(0) == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
