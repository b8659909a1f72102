"""Checkpoints: what a run was made from, and resuming only the same run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from components.core.atomic import atomic_dir, atomic_write_json
from components.config.params import Params
from components.methods import load_extra_state, save_extra_state


def content_sha256(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over every file's relative name and bytes under `folder` (sorted), minus `skip` names."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def made_from(params: Params, prepared_dir: Path, base_dir: Path, precision: str) -> dict:
    """Everything a checkpoint was made from: seed, the train params (not the process count: N processes
    train as one does), the resolved precision, the prepared data's content and the base model's files."""
    stats = json.loads((prepared_dir / "stats.json").read_text()) if (prepared_dir / "stats.json").exists() else {}
    data = stats.get("content_sha256") or content_sha256(prepared_dir)  # older prepared folders: hash the files
    return {"seed": params.seed, "precision": precision,
            "train": params.train.model_dump(mode="json", exclude={"processes"}),
            "data_sha256": data, "base_model_sha256": content_sha256(base_dir, skip=("peftpipe_source.json",))}


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _what_changed(old: dict, new: dict) -> str:
    """One phrase naming what differs between two `made_from` records."""
    names = {"data_sha256": "the prepared data's content", "base_model_sha256": "the base model's weights",
             "seed": "seed", "precision": "the precision"}
    changed = [names[k] for k in names if old.get(k) != new.get(k)]
    keys = sorted(k for k in set(old.get("train", {})) | set(new.get("train", {}))
                  if old.get("train", {}).get(k) != new.get("train", {}).get(k))
    changed += [f"train.{k}" for k in keys]
    return ", ".join(changed) if changed else "it was written by an older peftpipe"


def trainable_state(model) -> dict:
    """Copies of the trainable parameters, on the CPU (GPU memory stays for training; safetensors saves them)."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt_root: Path, step: int, parts: dict, model, optimizer, scheduler, method, keep: int = 2,
                    rank_rng: list | None = None) -> None:
    """Write a checkpoint; `rank_rng` (every rank's torch RNG state, data-parallel runs) is kept beside rank 0's."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(ckpt_root / f"step-{step:06d}") as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        save_extra_state(method, model, tmp / "method_state.safetensors")
        cuda = {"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}  # dropout on the GPU
        save_file({"torch": torch.get_rng_state(), **cuda, **{f"rank{r}": t for r, t in enumerate(rank_rng or [])}},
                  tmp / "rng.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        atomic_write_json(tmp / "state.json", {"step": step, "fingerprint": fingerprint(parts), "made_from": parts,
                                               "scheduler": scheduler.state_dict()})
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.pt", "rng.safetensors")


def latest_checkpoint(ckpt_root: Path, parts: dict) -> tuple[Path | None, str | None]:
    """(newest complete checkpoint made from `parts`, None) or (None, why the newest complete one is not used).

    Partial checkpoints (a crash while writing) are passed over silently."""
    fp, why = fingerprint(parts), None
    for d in sorted(ckpt_root.glob("step-*"), reverse=True):
        try:
            state = json.loads((d / "state.json").read_text())
            if not all((d / f).exists() for f in CHECKPOINT_FILES):
                continue
            if state["fingerprint"] == fp and state.get("made_from") == parts:
                return d, why
            why = why or f"not resuming {d}: it was made from other inputs ({_what_changed(state.get('made_from', {}), parts)})"
        except (OSError, ValueError, KeyError):
            continue
    if why is None and (ckpt_root / "finished.json").exists():
        why = f"the last run finished ({ckpt_root / 'finished.json'}) and kept no checkpoint to resume"
    return None, why


def clear_checkpoints(ckpt_root: Path, parts: dict, steps: int) -> None:
    """A finished run's checkpoints seed no other run: they go, and `finished.json` says which run finished."""
    for d in ckpt_root.glob("step-*"):
        shutil.rmtree(d, ignore_errors=True)
    atomic_write_json(ckpt_root / "finished.json", {"steps": steps, "fingerprint": fingerprint(parts),
                                                    "note": "a finished run keeps no checkpoints"})


def load_checkpoint(d: Path, model, optimizer, scheduler, method, rank: int = 0) -> int:
    import torch
    from safetensors.torch import load_file

    state = json.loads((d / "state.json").read_text())
    weights = load_file(d / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True, map_location=next(model.parameters()).device))
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(d / "rng.safetensors")
    torch.set_rng_state(rng.get(f"rank{rank}", rng["torch"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    load_extra_state(method, model, d / "method_state.safetensors")
    return int(state["step"])
