"""The locked pipeline run: one `peftpipe run` per project at a time, overrides recorded in
params.yaml, the embedded data generated when missing, then the Prefect flow and the summary."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from components.config.params import DataConfig, check_confined, load_params, write_overrides
from components.core.errors import UserError
from components.data.datagen import write_dataset
from flows.pipeline import run_pipeline
from flows.report import print_summary

PARAMS = Path("params.yaml")
LOCK_FILE = ".peftpipe.lock"


class RunLocked(UserError, RuntimeError):
    pass


def run_lock(path: Path = Path(LOCK_FILE)):
    """One `peftpipe run` per project at a time: an exclusive lock, released when the process ends."""

    @contextlib.contextmanager
    def lock():
        with open(path, "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunLocked(f"another peftpipe run is in progress in this project ({holder}); "
                                "wait for it to finish") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    return lock()


def run_pipeline_locked(overrides: list[str]) -> int:
    """The pipeline with `overrides` written to params.yaml, then the summary; the caller holds the
    run lock. Returns the exit code (1 when a stage failed; it printed its own message)."""
    check_confined(load_params(PARAMS, overrides))  # before anything is written
    if overrides:
        write_overrides(PARAMS, overrides)  # as `dvc exp run -S` does: params.yaml is the record
    params = load_params(PARAMS)
    refuse_unsupported(params)
    ensure_embedded_data(params.data.path)
    t0 = time.perf_counter()
    stages, failed = None, None
    try:
        stages = run_pipeline(".")
    except Exception as e:  # the failing stage printed its own message
        failed = str(e)
    if stages is not None or Path("metrics").is_dir():
        print_summary(".", stages, time.perf_counter() - t0)
    if failed:
        print(f"peftpipe: error: {failed}", file=sys.stderr)
        return 1
    return 0


def refuse_unsupported(params) -> None:
    """What the model family cannot do with these params stops the run before any stage (the base_model stage
    checks it too, when it materialises a model; this catches a change of the other params it depends on)."""
    base = Path(params.paths.base_model)
    if (base / "config.json").exists():
        from transformers import AutoConfig

        from components.model.capabilities import check_supported

        check_supported(AutoConfig.from_pretrained(base), params)


def ensure_embedded_data(path: str) -> None:
    """The embedded dataset is generated (deterministically) when it is not on disk yet."""
    if path == DataConfig().path and not Path(path).exists():
        n = write_dataset(path)
        print(f"generated the embedded QA dataset: {path} ({n} rows)")
        cache_tracked_data(path)


def cache_tracked_data(path: str) -> None:
    """Put regenerated data into the DVC cache when it matches its .dvc file (a fresh clone has no cache)."""
    dvc_file = Path(path + ".dvc")
    if not dvc_file.exists():
        return
    tracked = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    if hashlib.md5(Path(path).read_bytes()).hexdigest() != tracked:
        raise RuntimeError(f"{path} was regenerated but does not match {dvc_file}; the generator changed")
    subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", str(dvc_file)], check=True)
