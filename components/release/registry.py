"""Model registry on GTO (Git tags): versions with lineage, `staging`/`production` stages, rollback.

Why GTO: it is DVC's own model registry and needs nothing but the Git repository the pipeline
already lives in. A version is a tag `NAME@vX.Y.Z` on a *registration commit* that holds exactly
what made the model: `dvc.lock` (the bundle's content hash among the stage outputs), the data's
`.dvc` file, `params.yaml`, `metrics/` and `.dvc/config` (the DVC remote). The bundle itself lives in the DVC cache (and the DVC
remote after `dvc push`), so any version can be fetched back byte for byte. The tag's message is the
lineage as JSON: source commit, data hash, params hash, bundle hash, metrics, gate verdict (lineage.py).

A stage is a GTO assignment tag `NAME#stage#N`; the newest active assignment wins. Promotion first
checks the promotion policy (policy.py; its verdicts go to metrics/promotion.json), then materialises the
version's bundle (deployments.py: atomic directory write, checksums verified), then creates the tag: a kill at
any point leaves either the old stage or the new one pointing at a complete bundle.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from components.core.atomic import atomic_write_json
from components.core.layout import metrics_file
from components.release.deployments import bundle_predictions, fetch_bundle
from components.release.lineage import lineage
from components.release.policy import promotion_verdicts
from components.release.vcs import RegistryError, dvc, git, tick


STAGES = ("staging", "production")
PROMOTION_REPORT = "promotion"  # metrics/promotion.json: the last promotion check's verdicts


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


def materialise(root: Path, name: str, version: str, deploy_root: str) -> Path:
    """The version's bundle, fetched from the DVC cache (or remote) at its registration commit, checksums verified."""
    return fetch_bundle(root, name, version_info(Path(root), name, version), deploy_root)


def _bundle_rows(root: Path, name: str, version: str, deploy_root: str) -> dict | None:
    """The per-question predictions a version's bundle keeps (for promotion on shared questions), if it has them."""
    try:
        folder = materialise(root, name, version, deploy_root)
    except Exception as e:  # a version registered without a bundle (or one this cache cannot fetch): means decide
        print(f"{name} {version}: no bundle predictions to compare ({type(e).__name__}); comparing registered means")
        return None
    return bundle_predictions(folder)


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
        dvc(root, "commit", "--force", "--quiet", str(data_dvc))
    # .dvc/config too: it names the DVC remote a later `materialise` fetches this version's bundle from
    paths = [p for p in ("dvc.lock", str(data_dvc), "params.yaml", "metrics", ".dvc/config") if (root / p).exists()]
    git(root, "add", "--", *paths)
    git(root, "commit", "--allow-empty", "--no-verify", "-q", "-m",
        f"peftpipe: register {name} (data {str(info['data']['md5'])[:8]}, params {info['params_sha256'][:8]})",
        "--", *paths)
    commit = git(root, "rev-parse", "HEAD")
    tick(root)
    gto.api.register(str(root), name, commit, message=json.dumps(info, sort_keys=True),
                     bump_patch=bool(known), version=None if known else "v0.0.1")
    version = latest(root, name)
    if push:
        dvc(root, "push", "--quiet")
        git(root, "push", "origin", "HEAD", f"{name}@{version}")
    print(f"registered {name} {version} at {commit[:8]}: bundle {info['bundle']['md5'][:12]}, "
          f"rouge-l {info['metrics'].get('rouge-l')}, data {str(info['data']['md5'])[:12]}")
    return {"version": version, "commit": commit, "lineage": info, "stages": [], "new": True}


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
    verdicts = promotion_verdicts(candidate, production, max_regression, *rows)
    problems = [v["reason"] for v in verdicts if not v["passed"]]
    atomic_write_json(metrics_file(PROMOTION_REPORT, root), {
        "name": name, "version": version, "stage": stage, "production": prod_version, "passed": not problems,
        "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "verdicts": verdicts})
    if problems:
        raise RegistryError(f"refusing to promote {name} {version} to {stage}: " + "; ".join(problems))
    if current(root, name, stage) == version:
        print(f"{name} {version} is already in {stage}")
        return {"version": version, "stage": stage, "changed": False}
    path = materialise(root, name, version, deploy_root)
    tick(root)
    gto.api.assign(str(root), name, stage, version=version, force=True,
                   message=f"promote {name} {version} to {stage}")
    if push:
        git(root, "push", "origin", "--tags")
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
    tick(root)
    gto.api.unassign(str(root), name, version=now, stage=stage, message=f"roll back {name} {stage} from {now}")
    tick(root)
    after = current(root, name, stage)
    if after != earlier:  # the earlier version's own assignment was withdrawn before: assign it again
        gto.api.assign(str(root), name, stage, version=earlier, force=True, message=f"roll back {stage} to {earlier}")
    if push:
        git(root, "push", "origin", "--tags")
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
