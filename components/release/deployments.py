"""Deployments: where a registered version's bundle is materialised, and how it gets there.

A version's bundle is fetched from the DVC cache (or the DVC remote) at its registration commit into
`<deploy_dir>/<name>/<version>`, written atomically and checksum-verified: a kill at any point leaves either no
folder or a complete one, so a stage's tag only ever points at a complete bundle.
"""

from __future__ import annotations

from pathlib import Path

from components.core.atomic import atomic_dir
from components.core.layout import CHECKSUMS
from components.release.vcs import RegistryError


def deployment_dir(root: Path, deploy_root: str, name: str, version: str) -> Path:
    d = Path(deploy_root)
    return (d if d.is_absolute() else Path(root) / d) / name / version


def fetch_bundle(root: Path, name: str, info: dict, deploy_root: str) -> Path:
    """The bundle of the registered version `info` ({version, commit, lineage}), fetched from the DVC cache (or
    remote) at its registration commit, checksums verified; a complete earlier copy is reused."""
    from dvc.api import DVCFileSystem

    from components.bundle.format import verify_checksums

    root, version = Path(root), info["version"]
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


def bundle_predictions(folder: Path) -> dict | None:
    """The per-question predictions a materialised bundle keeps (for promotion on shared questions), if it has them."""
    from components.evaluation.evaluate import read_predictions
    from components.evaluation.gates import PROMOTED_PREDICTIONS

    return read_predictions(folder, PROMOTED_PREDICTIONS) if (folder / PROMOTED_PREDICTIONS).exists() else None
