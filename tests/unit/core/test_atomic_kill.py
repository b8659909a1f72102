"""SIGKILL merge and export while they write: the final path keeps its previous, complete version."""

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from components.bundle.format import verify_checksums
from components.core.atomic import atomic_dir
from conftest import BIN, project_with


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def kill_while_writing(proj: Path, stage: str, target: Path, timeout: float = 300) -> bool:
    """Start `peftpipe stage STAGE`; SIGKILL it once its temporary sibling of `target` holds a file."""
    proc = subprocess.Popen([str(BIN / "peftpipe"), "stage", stage], cwd=proj, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if any(any(t.iterdir()) for t in target.parent.glob(f".{target.name}.*.tmp")):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    return False


@pytest.mark.parametrize("stage", ["merge", "export"])
def test_kill_during_write_leaves_previous_artifact_whole(exported, tmp_path, stage):
    p, _, _ = exported
    q = p.model_copy(deep=True)
    q.paths.merged, q.paths.bundle = str(tmp_path / "merged"), str(tmp_path / "bundle")
    shutil.copytree(p.paths.merged, q.paths.merged)  # the previous, complete versions
    shutil.copytree(p.paths.bundle, q.paths.bundle)
    target = Path(q.paths.merged if stage == "merge" else q.paths.bundle)
    before = tree_digest(target)
    proj = project_with(q, tmp_path / "proj")

    assert kill_while_writing(proj, stage, target), f"{stage} finished before it was killed"
    assert tree_digest(target) == before  # untouched: no partial artifact at the final path
    if stage == "export":
        verify_checksums(target)  # what a server would check before loading
    else:  # the stage runs again to completion after the kill
        subprocess.run([str(BIN / "peftpipe"), "stage", "merge"], cwd=proj, check=True, capture_output=True)
        assert (target / "merge_report.json").exists() and tree_digest(target).keys() == before.keys()


def test_a_swap_cut_short_is_undone_by_the_next_write(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    os.replace(target, tmp_path / ".bundle.old")  # killed between the two renames of the swap
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:  # the next write restores the previous version first
            (d / "v").write_text("2")
            raise RuntimeError("killed again")
    assert (target / "v").read_text() == "1" and not (tmp_path / ".bundle.old").exists()
