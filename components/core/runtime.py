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


def env_threads() -> int:
    """OMP_NUM_THREADS when it is set to a positive whole number (a shared machine's share), else 0."""
    v = os.environ.get("OMP_NUM_THREADS", "")
    return int(v) if v.isdigit() and int(v) > 0 else 0


def set_threads(n: int = 0) -> int:
    """Torch's intra-op threads: n, or 0 for OMP_NUM_THREADS when set, else every core."""
    import torch

    n = n or env_threads() or os.cpu_count() or 1
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
def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def machine() -> dict:
    """The CPU (model, cores, the flags that decide the kernels) and the load average: recorded with results."""
    isa = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"})
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "isa": isa,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


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


DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto"):
    """The torch device for `train.device`: auto takes CUDA when present, then Apple MPS, else the CPU; asking
    for one that is not there is a ConfigError."""
    import torch

    from components.core.errors import ConfigError

    cuda, mps = torch.cuda.is_available(), bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("train.device=cuda, but torch sees no CUDA device (torch.cuda.is_available() is False; "
                          "this torch is " + torch.__version__ + "); use train.device=auto or cpu")
    if name == "mps" and not mps:
        raise ConfigError("train.device=mps, but torch sees no Apple MPS device; use train.device=auto or cpu")
    if name not in DEVICES:
        raise ConfigError(f"train.device {name!r}: choose from {', '.join(DEVICES)}")
    return torch.device(name)


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """The precision a device uses for `precision` (auto on CPU is decided by measurement in
    components.training.precision; this is the flag-based answer used where nothing is measured)."""
    if precision != "auto":
        return precision
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "fp32"
    return "bf16" if has_fast_bf16() else "fp32"


def autocast_for(device, precision: str):
    """The autocast context for a device and precision (a no-op context for fp32)."""
    from contextlib import nullcontext

    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=getattr(device, "type", str(device)),
                          dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
