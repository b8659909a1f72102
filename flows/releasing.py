"""Run the pipeline, then register and promote what passed: the one path `peftpipe watch`, the
Prefect deployment (flows/release.py) and the CI scripts share."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

PARAMS = Path("params.yaml")


def data_files(params) -> list[str]:
    return [p for p in (params.data.path, params.data.test_path) if p]


def data_state(root: Path, params) -> dict[str, str | None]:
    """md5 of each tracked data file (None when missing), as DVC computes it for a file."""
    from components.core.atomic import file_md5

    return {rel: file_md5(Path(rel) if Path(rel).is_absolute() else root / rel) for rel in data_files(params)}


def data_changed(root: Path, params) -> bool:
    """True when the data differs from what the last pipeline run validated (dvc.lock), or nothing ran yet."""
    lock_file = root / "dvc.lock"
    if not lock_file.exists():
        return True
    deps = {d["path"]: d.get("md5") for d in (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
            .get("validate", {}).get("deps", [])}
    return any(deps.get(rel) != md5 for rel, md5 in data_state(root, params).items())


def release(root: Path = Path("."), overrides: list[str] | None = None, promote_to: str | None = "staging") -> dict:
    """`peftpipe run` (under the run lock), then register the bundle and promote it to `promote_to`.

    Returns {"passed", "exit", "version", "promoted"}; a failing run registers and promotes nothing.
    """
    from components.release import registry
    from flows.run import run_lock, run_pipeline_locked
    from components.config.params import load_params

    root = Path(root)
    with run_lock(root / ".peftpipe.lock"):
        code = run_pipeline_locked(overrides or [])
    result = {"passed": code == 0, "exit": code, "version": None, "promoted": None}
    if code != 0:
        print("release: the run failed: nothing registered or promoted")
        return result
    params = load_params(root / PARAMS)
    reg = registry.register(root, params, params.registry.name, push=params.registry.push)
    result["version"] = reg["version"]
    if promote_to:
        registry.promote(root, params.registry.name, reg["version"], promote_to, params.registry.deploy_dir,
                         params.gates.max_regression, push=params.registry.push)
        result["promoted"] = promote_to
    return result


def watch(root: Path = Path("."), interval: float = 5.0, debounce: float = 10.0, max_runs: int = 0,
          promote_to: str | None = "staging", overrides: list[str] | None = None, on_change=None) -> list[dict]:
    """Poll the tracked data; when it differs from the last run's and has been still for `debounce`
    seconds, run `release` (one at a time: changes seen during a run are handled after it).
    Stops after `max_runs` runs (0: never)."""
    from components.config.params import load_params

    root = Path(root)
    on_change = on_change or (lambda: release(root, overrides, promote_to))
    results: list[dict] = []
    params = load_params(root / PARAMS)
    print(f"watching {', '.join(data_files(params))} every {interval:g}s (debounce {debounce:g}s); Ctrl+C stops")
    seen = data_state(root, params)
    handled = None if data_changed(root, params) else seen  # the data state the last run used
    if handled is None:
        print("the data differs from what the last run used")
    still_since = time.monotonic()
    while True:
        time.sleep(interval)
        params = load_params(root / PARAMS)
        now = data_state(root, params)
        if now != seen:  # still changing: restart the quiet period
            changed = [k for k in now if now[k] != seen.get(k)]
            seen, still_since = now, time.monotonic()
            print(f"{time.strftime('%H:%M:%S')} data changed: {', '.join(changed)}")
            continue
        if now == handled or time.monotonic() - still_since < debounce:
            continue
        print(f"{time.strftime('%H:%M:%S')} data still for {debounce:g}s: running the pipeline")
        from flows.run import RunLocked

        try:
            results.append(on_change())
            handled = now  # edits made during the run are seen at the next poll and run after it
        except RunLocked as e:  # someone else's run: try again after the next quiet period
            print(f"{e}; retrying")
            still_since = time.monotonic()
            continue
        except Exception as e:  # registration or promotion refused: report it and keep watching
            results.append({"passed": None, "error": f"{type(e).__name__}: {e}"})
            handled = now
        print(f"{time.strftime('%H:%M:%S')} run finished: {results[-1]}")
        if max_runs and len(results) >= max_runs:
            return results


def promote_version(root: Path, params, version: str | None, to: str) -> str:
    """Promote `version` ('latest'; None: the latest to staging, staging's to production) to `to`; returns it."""
    from components.release import registry

    name = params.registry.name
    if version == "latest" or (version is None and to == "staging"):
        version = registry.latest(root, name)
    elif version is None:  # to production: what staging holds
        version = registry.current(root, name, "staging")
    if version is None:
        raise registry.RegistryError(f"no version of {name} to promote" + (" in staging" if to == "production" else ""))
    registry.promote(root, name, version, to, params.registry.deploy_dir, params.gates.max_regression,
                     push=params.registry.push)
    return version


def deployed_bundle(root: Path, params, stage: str) -> tuple[str, dict]:
    """(bundle folder, release info) of the version the registry has in `stage`, materialised from the DVC cache."""
    from components.release import registry

    name = params.registry.name
    version = registry.current(root, name, stage)
    if version is None:
        raise registry.RegistryError(f"nothing in {stage} for {name}: promote a version (peftpipe promote --to {stage}) "
                                     "or pass --bundle DIR")
    folder = registry.materialise(root, name, version, params.registry.deploy_dir)
    return str(folder), {"name": name, "version": version, "stage": stage, "root": str(root.resolve()),
                         "deploy_dir": params.registry.deploy_dir}


def emit_data_changed(root: Path, params_file: Path = PARAMS) -> dict:
    """Send the Prefect event `peftpipe.data.changed` (a deployment trigger in infra/prefect/prefect.yaml)."""
    from prefect.events import emit_event

    from components.config.params import load_params

    params = load_params(root / params_file)
    event = emit_event(event="peftpipe.data.changed",
                       resource={"prefect.resource.id": f"peftpipe.data.{params.registry.name}"},
                       payload={"files": data_state(root, params)})
    print(f"emitted peftpipe.data.changed ({event.id if event else 'no Prefect API configured: not sent'})")
    return {"passed": event is not None, "event": str(event.id) if event else None}
