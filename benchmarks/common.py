"""Shared by the benchmarks: the quiet-machine check, the environment block, peak memory, atomic result files, tables."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"
MAX_LOAD = 1.5  # a benchmark started above this 1-minute load average waits (--wait), refuses or warns


def env_block(threads: int) -> dict:
    """CPU, flags, load average, threads and library versions, recorded with every result."""
    import peft
    import torch
    import transformers

    from components.core.runtime import machine, resolve_precision

    return {**machine(), "threads": threads, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "bf16_native": resolve_precision("auto") == "bf16"}


TRAIN_EVAL_CODE = ("core", "data", "evaluation", "methods", "model", "training")  # components/ a cell's scores come from


def code_hash(parts: tuple[str, ...] = TRAIN_EVAL_CODE) -> str:
    """The content of components/<part>/*.py (and components/*.py): a cached result keyed on it is redone when the
    code that made it changes, not only the method's own file."""
    files = sorted(f for f in (ROOT / "components").glob("*.py")) + sorted(
        f for part in parts for f in (ROOT / "components" / part).rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def made_from(data: str | Path | None = None) -> dict:
    """What a cached result was made from besides a benchmark's own options: the train/evaluate code, the data file's
    content (not its name), the machine (CPU model and kernel flags: a time budget buys a different number of steps
    elsewhere, and precision auto resolves differently) and the library versions. Part of every cache key."""
    import peft
    import torch
    import transformers

    from components.core.runtime import machine

    ident = {"code": code_hash(), "machine": {k: v for k, v in machine().items() if k != "load_average"},
             "versions": [torch.__version__, transformers.__version__, peft.__version__]}
    if data is not None:
        ident["data_sha256"] = hashlib.sha256(Path(data).read_bytes()).hexdigest()
    return ident


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


def quiet_enough(wait_minutes: float) -> bool:
    """True once the 1-minute load average is at most MAX_LOAD (waiting up to wait_minutes); says why if not."""
    deadline = time.time() + 60 * wait_minutes
    while True:
        load = os.getloadavg()[0]
        if load <= MAX_LOAD:
            return True
        if time.time() >= deadline:
            print(f"refusing to benchmark: the 1-minute load average is {load:.2f} (> {MAX_LOAD}); other work shares "
                  "the cores and the figures would measure it. Stop it, or pass --wait MINUTES.", file=sys.stderr)
            return False
        print(f"load average {load:.2f} > {MAX_LOAD}: waiting", flush=True)
        time.sleep(15)


def warn_if_busy() -> float:
    """The 1-minute load average now; a warning on stderr when it is above MAX_LOAD (the times would measure it)."""
    load = os.getloadavg()[0]
    if load > MAX_LOAD:
        print(f"warning: 1-minute load average {load:.2f} > {MAX_LOAD}: the times will measure contention", file=sys.stderr)
    return load
