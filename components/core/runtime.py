"""Process-wide runtime setup: quiet libraries, threads, seeds, CPU capabilities."""

from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def quiet_env() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*axis name.*will not be used.*")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


LOG_DIR = Path("artifacts") / "logs"


def log_to_file(path: Path) -> Path:
    """Library logging (INFO and up: ONNX quantizer, DVC, Prefect, transformers) goes to `path`, appended; the
    terminal keeps warnings and errors only, so a run shows progress bars, verdicts and the summary."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):  # ours from an earlier call, or a library's basicConfig printing INFO
        if getattr(h, "peftpipe", False) or type(h) is logging.StreamHandler:
            root.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
    to_file = logging.FileHandler(path.resolve(), encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_terminal = logging.StreamHandler()
    to_terminal.setLevel(logging.WARNING)
    to_terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for h in (to_file, to_terminal):
        h.peftpipe = True
        root.addHandler(h)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return path


def set_threads(n: int = 0) -> int:
    import torch

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def set_seed(seed: int) -> None:
    """Seed every RNG; call before any model or adapter is built."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matmul (AMX or AVX-512 BF16)."""
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if has_fast_bf16() else "fp32"
    return precision
