"""SIGKILL the train stage at random points; the resumed run ends with the uninterrupted run's weights."""

import os
import signal
import subprocess
import time
from pathlib import Path

from safetensors.torch import load_file

from components.model.base_model import materialise
from components.data.prepare import run_prepare
from components.training.train import run_train
from components.data.validate import run_validate
from conftest import BIN, project_with, tiny_params



def curve_steps(path: Path) -> int:
    try:
        return len(path.read_text().splitlines()) - 1
    except OSError:
        return 0


def kill_at(proj: Path, curve: Path, step: int, timeout: float = 900) -> bool:
    """Start the train stage and SIGKILL it once the loss curve reaches `step`; False if it finished first."""
    proc = subprocess.Popen([str(BIN / "peftpipe"), "stage", "train"], cwd=proj, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while proc.poll() is None:
        if curve_steps(curve) >= step or time.time() - t0 > timeout:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def test_sigkill_at_several_points_then_resume_equals_clean_run(tiny_model_dir, tmp_path):
    p = tiny_params(tmp_path, tiny_model_dir, ["train.steps=30", "train.checkpoint_every=5", "train.batch_size=16"])
    materialise(p.model, p.paths.base_model)
    run_validate(p.data, p.validate_, p.paths.validated)
    run_prepare(p.paths.validated, p.paths.base_model, p.prepare, p.paths.prepared)

    clean = p.model_copy(deep=True)
    clean.paths.train = str(tmp_path / "clean" / "train")
    run_train(clean, p.paths.base_model, p.paths.prepared, clean.paths.train, tmp_path / "clean" / "ckpt", progress=False)

    proj = project_with(p, tmp_path / "crash")
    curve = Path(p.paths.train + "_curve.tsv")
    import random

    points = sorted({random.randint(2, 14), random.randint(15, 28)})  # random, and printed when the test fails
    print(f"kill points: {points}")
    kills = [k for k in points if kill_at(proj, curve, k)]
    assert kills, "training finished before any kill point"
    assert Path(p.paths.train + "_checkpoints").is_dir() and not Path(p.paths.train).exists()
    subprocess.run([str(BIN / "peftpipe"), "stage", "train"], cwd=proj, check=True, capture_output=True)

    a = load_file(Path(clean.paths.train) / "adapter" / "adapter_model.safetensors")
    b = load_file(Path(p.paths.train) / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    steps = [int(line.split("\t")[0]) for line in curve.read_text().splitlines()[1:]]
    assert steps == list(range(1, 31))  # the curve has each step once, however often the run was killed
