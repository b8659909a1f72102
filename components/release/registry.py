"""Model registry on GTO (Git tags): versions with lineage, `staging`/`production` stages, rollback.

Why GTO: it is DVC's own model registry and needs nothing but the Git repository the pipeline
already lives in. A version is a tag `NAME@vX.Y.Z` on a *registration commit* that holds exactly
what made the model: `dvc.lock` (the bundle's content hash among the stage outputs), the data's
`.dvc` file, `params.yaml`, `metrics/` and `.dvc/config` (the DVC remote). The bundle itself lives in the DVC cache (and the DVC
remote after `dvc push`), so any version can be fetched back byte for byte. The tag's message is the
lineage as JSON: source commit, data hash, params hash, bundle hash, metrics, gate verdict.

A stage is a GTO assignment tag `NAME#stage#N`; the newest active assignment wins. Promotion first
materialises the version's bundle (atomic directory write, checksums verified), then creates the
tag: a kill at any point leaves either the old stage or the new one pointing at a complete bundle.
"""

from __future__ import annotations

from components.core.errors import UserError
import hashlib
import json
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import yaml

from components.core.atomic import atomic_dir
from components.core.layout import CHECKSUMS, MODEL_CARD_JSON, REGRESSION_METRICS, TEXT_METRICS

STAGES = ("staging", "production")


class RegistryError(UserError, RuntimeError):
    """A registry operation that must not happen (failed gates, regression, nothing to roll back to)."""


@lru_cache(maxsize=None)
def _ensure_identity(root: Path) -> None:
    """Commits and tags need an author: fall back to 'peftpipe' on machines (CI) without a git identity."""
    for key, env, default in (("user.name", "NAME", "peftpipe"), ("user.email", "EMAIL", "peftpipe@localhost")):
        value = _git_config(root, key) or default
        os.environ.setdefault(f"GIT_AUTHOR_{env}", value)
        os.environ.setdefault(f"GIT_COMMITTER_{env}", value)


def _git(root: Path, *args: str, check: bool = True) -> str:
    _ensure_identity(root)
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RegistryError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _git_config(root: Path, key: str) -> str | None:
    proc = subprocess.run(["git", "config", key], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() or None


def _dvc(root: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RegistryError(f"dvc {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _tick(root: Path) -> None:
    """GTO orders events by their tag's timestamp (whole seconds): never create two in one second."""
    stamps = _git(root, "for-each-ref", "--sort=-creatordate", "--count=1", "--format=%(creatordate:unix)", "refs/tags")
    if stamps:
        wait = int(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


# ---------------------------------------------------------------- lineage

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
        "source_commit": _git(root, "rev-parse", "HEAD", check=False) or None,
        "data": {"path": params.data.path, "md5": _dep_hash(lock, "validate", params.data.path)},
        "params_sha256": params_hash(params),
        "method": params.train.method,
        "base_model": params.model.source,
        "bundle": {"path": params.paths.bundle, "md5": bundle_md5},
        "metrics": {k: tuned[k] for k in TEXT_METRICS if k in tuned},
        "gates_passed": bool(gate.get("passed")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ---------------------------------------------------------------- reading the registry

def versions(root: Path, name: str) -> list[dict]:
    """Every registered version, newest first: {version, commit, lineage, stages}."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        rows = gto.api.show(str(root), name, deprecated=False)
    except ArtifactNotFound:
        return []
    in_stage = {s: current(root, name, s) for s in STAGES}
    out = []
    for row in rows:
        try:
            info = json.loads(row.get("message") or "")
        except ValueError:
            info = {}
        out.append({"version": row["version"], "commit": row["commit_hexsha"], "lineage": info,
                    "stages": [s for s in STAGES if in_stage[s] == row["version"]]})
    return out


def current(root: Path, name: str, stage: str) -> str | None:
    """The version now in `stage` (newest active assignment), or None."""
    import gto.api

    try:
        found = gto.api.find_versions_in_stage(str(root), name, stage)
    except Exception:  # no such artifact yet
        return None
    if not found:
        return None
    found = found if isinstance(found, list) else [found]
    return found[0].version


def version_info(root: Path, name: str, version: str) -> dict:
    for v in versions(root, name):
        if v["version"] == version:
            return v
    raise RegistryError(f"{name} has no registered version {version}")


def latest(root: Path, name: str) -> str | None:
    vs = versions(root, name)
    return max(vs, key=lambda v: _semver(v["version"]))["version"] if vs else None


def _semver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.lstrip("v").split("."))


# ---------------------------------------------------------------- writing

def register(root: Path, params, name: str, push: bool = False) -> dict:
    """Register the bundle the last run exported: registration commit + annotated version tag."""
    import gto.api

    root = Path(root)
    info = lineage(root, params)
    if not info["gates_passed"]:
        raise RegistryError("the last run did not pass its quality gates: nothing to register")
    known = versions(root, name)
    for v in known:
        if v["lineage"].get("bundle", {}).get("md5") == info["bundle"]["md5"]:
            print(f"{name} {v['version']} already holds this bundle ({info['bundle']['md5'][:12]}); nothing registered")
            return {**v, "new": False}
    data_dvc = Path(params.data.path + ".dvc")
    if (root / data_dvc).exists():  # record this data version in its .dvc file and the cache
        _dvc(root, "commit", "--force", "--quiet", str(data_dvc))
    # .dvc/config too: it names the DVC remote a later `materialise` fetches this version's bundle from
    paths = [p for p in ("dvc.lock", str(data_dvc), "params.yaml", "metrics", ".dvc/config") if (root / p).exists()]
    _git(root, "add", "--", *paths)
    _git(root, "commit", "--allow-empty", "--no-verify", "-q", "-m",
         f"peftpipe: register {name} (data {str(info['data']['md5'])[:8]}, params {info['params_sha256'][:8]})",
         "--", *paths)
    commit = _git(root, "rev-parse", "HEAD")
    _tick(root)
    gto.api.register(str(root), name, commit, message=json.dumps(info, sort_keys=True),
                     bump_patch=bool(known), version=None if known else "v0.0.1")
    version = latest(root, name)
    if push:
        _dvc(root, "push", "--quiet")
        _git(root, "push", "origin", "HEAD", f"{name}@{version}")
    print(f"registered {name} {version} at {commit[:8]}: bundle {info['bundle']['md5'][:12]}, "
          f"rouge-l {info['metrics'].get('rouge-l')}, data {str(info['data']['md5'])[:12]}")
    return {"version": version, "commit": commit, "lineage": info, "stages": [], "new": True}


def check_promotion(candidate: dict, production: dict | None, max_regression: float,
                    candidate_rows: dict | None = None, production_rows: dict | None = None) -> list[str]:
    """Reasons a version may not be promoted: failed gates, or a regression against production beyond
    `max_regression` points. With both bundles' per-question predictions (keyed by stable question id) the
    comparison is on the questions both answered (ROUGE-L and exact match); else on the registered means."""
    problems = []
    lin = candidate["lineage"]
    if not lin.get("gates_passed"):
        problems.append(f"{candidate['version']} did not pass its quality gates")
    if not production or production["version"] == candidate["version"]:
        return problems
    shared = sorted(set(candidate_rows or {}) & set(production_rows or {}))
    if shared:
        for metric in REGRESSION_METRICS:
            diffs = [candidate_rows[i]["scores"][metric] - production_rows[i]["scores"][metric] for i in shared
                     if metric in candidate_rows[i]["scores"] and metric in production_rows[i]["scores"]]
            if diffs and sum(diffs) / len(diffs) < -max_regression:
                problems.append(f"{metric} {sum(diffs) / len(diffs):+.2f} against production {production['version']} on "
                                f"the {len(diffs)} questions both answered (at most {max_regression:g} points lower allowed)")
        return problems
    prod = production["lineage"].get("metrics", {})
    for metric, value in lin.get("metrics", {}).items():
        if metric in prod and value < prod[metric] - max_regression:
            problems.append(f"{metric} {value:.2f} regresses against production {production['version']} "
                            f"({prod[metric]:.2f}; at most {max_regression:g} points lower allowed)")
    return problems


def _bundle_rows(root: Path, name: str, version: str, deploy_root: str) -> dict | None:
    """The per-question predictions a version's bundle keeps (for promotion on shared questions), if it has them."""
    from components.evaluation.evaluate import read_predictions
    from components.evaluation.gates import PROMOTED_PREDICTIONS

    try:
        folder = materialise(root, name, version, deploy_root)
    except Exception as e:  # a version registered without a bundle (or one this cache cannot fetch): means decide
        print(f"{name} {version}: no bundle predictions to compare ({type(e).__name__}); comparing registered means")
        return None
    f = folder / PROMOTED_PREDICTIONS
    return read_predictions(folder, PROMOTED_PREDICTIONS) if f.exists() else None


def deployment_dir(root: Path, deploy_root: str, name: str, version: str) -> Path:
    d = Path(deploy_root)
    return (d if d.is_absolute() else Path(root) / d) / name / version


def materialise(root: Path, name: str, version: str, deploy_root: str) -> Path:
    """The version's bundle, fetched from the DVC cache (or remote) at its registration commit, checksums verified."""
    from dvc.api import DVCFileSystem

    from components.bundle.format import verify_checksums

    root = Path(root)
    info = version_info(root, name, version)
    dest = deployment_dir(root, deploy_root, name, version)
    if (dest / CHECKSUMS).exists():
        try:
            verify_checksums(dest)
            return dest
        except Exception:
            pass  # damaged: fetch again
    bundle_path = info["lineage"]["bundle"]["path"]
    fs = DVCFileSystem(str(root), rev=info["commit"])
    with atomic_dir(dest) as tmp:
        try:
            fs.get(bundle_path, str(tmp / "b"), recursive=True)
        except Exception as e:
            raise RegistryError(f"{name} {version}: the bundle {bundle_path} ({info['lineage']['bundle']['md5']}) is in "
                                f"neither the DVC cache nor the remote ({type(e).__name__}: {e}); run `dvc pull`") from None
        for f in (tmp / "b").iterdir():
            f.rename(tmp / f.name)
        (tmp / "b").rmdir()
        verify_checksums(tmp)
    return dest


def promote(root: Path, name: str, version: str, stage: str, deploy_root: str, max_regression: float,
            push: bool = False) -> dict:
    """Assign `stage` to `version` after the checks; the bundle is materialised before the tag exists."""
    import gto.api

    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    root = Path(root)
    candidate = version_info(root, name, version)
    prod_version = current(root, name, "production")
    production = version_info(root, name, prod_version) if prod_version else None
    rows = (_bundle_rows(root, name, version, deploy_root), _bundle_rows(root, name, prod_version, deploy_root)) \
        if production and prod_version != version else (None, None)
    problems = check_promotion(candidate, production, max_regression, *rows)
    if problems:
        raise RegistryError(f"refusing to promote {name} {version} to {stage}: " + "; ".join(problems))
    if current(root, name, stage) == version:
        print(f"{name} {version} is already in {stage}")
        return {"version": version, "stage": stage, "changed": False}
    path = materialise(root, name, version, deploy_root)
    _tick(root)
    gto.api.assign(str(root), name, stage, version=version, force=True,
                   message=f"promote {name} {version} to {stage}")
    if push:
        _git(root, "push", "origin", "--tags")
    print(f"promoted {name} {version} to {stage} (bundle {path})")
    return {"version": version, "stage": stage, "changed": True, "bundle": str(path)}


def rollback(root: Path, name: str, stage: str, deploy_root: str, push: bool = False) -> dict:
    """Withdraw the version now in `stage`; the one assigned before it is back in effect."""
    import gto.api

    root = Path(root)
    now = current(root, name, stage)
    if now is None:
        raise RegistryError(f"nothing in {stage} to roll back")
    earlier = _previous_in_stage(root, name, stage, now)
    if earlier is None:
        raise RegistryError(f"{name} {now} is the only version ever in {stage}: there is nothing to roll back to")
    materialise(root, name, earlier, deploy_root)  # the target must be complete before the switch
    _tick(root)
    gto.api.unassign(str(root), name, version=now, stage=stage, message=f"roll back {name} {stage} from {now}")
    _tick(root)
    after = current(root, name, stage)
    if after != earlier:  # the earlier version's own assignment was withdrawn before: assign it again
        gto.api.assign(str(root), name, stage, version=earlier, force=True, message=f"roll back {stage} to {earlier}")
    if push:
        _git(root, "push", "origin", "--tags")
    print(f"rolled back {name} {stage}: {now} -> {earlier}")
    return {"stage": stage, "from": now, "to": earlier}


def _previous_in_stage(root: Path, name: str, stage: str, now: str) -> str | None:
    """The version that takes over `stage` when `now` is withdrawn: the newest one still assigned there."""
    import gto.api

    last_event: dict[str, dict] = {}
    for e in gto.api.history(str(root), name, ascending=True):
        if e.get("stage") == stage and e.get("event") in ("assignment", "unassignment"):
            last_event[e["version"]] = e
    live = [e for v, e in last_event.items() if v != now and e["event"] == "assignment"]
    return max(live, key=lambda e: e["timestamp"])["version"] if live else None
