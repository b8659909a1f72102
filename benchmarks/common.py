"""Shared by the benchmarks: the environment block, peak memory, atomic result files, tables."""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"


def env_block(threads: int) -> dict:
    """CPU, flags, load average, threads and library versions, recorded with every result."""
    import peft
    import torch
    import transformers

    from components.core.runtime import machine, resolve_precision

    return {**machine(), "threads": threads, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "bf16_native": resolve_precision("auto") == "bf16"}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def dir_size_mb(path: Path, skip: tuple[str, ...] = ("metrics.json", "method.json")) -> float:
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and f.name not in skip) / 2**20, 3)


def write_json(path: Path, data: dict) -> None:
    from components.core.atomic import atomic_write_json

    atomic_write_json(path, data)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def markdown_table(headers: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:,.2f}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
