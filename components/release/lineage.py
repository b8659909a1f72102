"""What a registered version records: where it came from (commit, data, params, bundle hashes) and how good it is.

The hashes come from `dvc.lock`, the record of the pipeline run that exported the bundle.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml

from components.core.layout import MODEL_CARD_JSON, TEXT_METRICS
from components.release.vcs import RegistryError, git


def _lock(root: Path) -> dict:
    f = root / "dvc.lock"
    if not f.exists():
        raise RegistryError("no dvc.lock: run the pipeline (peftpipe run) before registering")
    return yaml.safe_load(f.read_text()) or {}


def _out_hash(lock: dict, stage: str, path: str) -> str | None:
    for o in lock.get("stages", {}).get(stage, {}).get("outs", []):
        if o["path"].rstrip("/") == path.rstrip("/"):
            return o.get("md5")
    return None


def _dep_hash(lock: dict, stage: str, path: str) -> str | None:
    for d in lock.get("stages", {}).get(stage, {}).get("deps", []):
        if d["path"].rstrip("/") == path.rstrip("/"):
            return d.get("md5")
    return None


def params_hash(params) -> str:
    """Hash of the effective, validated params (comments and key order do not count)."""
    return hashlib.sha256(params.model_dump_json(by_alias=True).encode()).hexdigest()[:16]


def lineage(root: Path, params) -> dict:
    """What a registered version records: where it came from and how good it is."""
    lock = _lock(root)
    bundle = Path(params.paths.bundle)
    bundle = bundle if bundle.is_absolute() else root / bundle
    card_file = bundle / MODEL_CARD_JSON
    gate_file = root / "metrics" / "gate.json"
    if not card_file.exists():
        raise RegistryError(f"{card_file} not found: the export stage has not produced a bundle")
    gate = json.loads(gate_file.read_text()) if gate_file.exists() else {}
    card = json.loads(card_file.read_text())
    bundle_md5 = _out_hash(lock, "export", params.paths.bundle)
    if bundle_md5 is None:
        raise RegistryError(f"dvc.lock has no output {params.paths.bundle} for the export stage")
    tuned = card.get("metrics", {}).get("tuned", card.get("metrics", {}))
    return {
        "source_commit": git(root, "rev-parse", "HEAD", check=False) or None,
        "data": {"path": params.data.path, "md5": _dep_hash(lock, "validate", params.data.path)},
        "params_sha256": params_hash(params),
        "method": params.train.method,
        "base_model": params.model.source,
        "bundle": {"path": params.paths.bundle, "md5": bundle_md5},
        "metrics": {k: tuned[k] for k in TEXT_METRICS if k in tuned},
        "gates_passed": bool(gate.get("passed")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
