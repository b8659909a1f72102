"""The Prefect flow a deployment runs when the data changes: pipeline, then register and promote.

`infra/prefect/prefect.yaml` deploys it (polling schedule, or an event trigger fed by
`peftpipe watch --emit-event`); it calls the same `flows.releasing` code as `peftpipe watch`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.pipeline import prefect_env


@flow(name="peftpipe-release", log_prints=True)
def release_flow(root: str = ".", promote_to: str = "staging", only_if_data_changed: bool = True) -> dict:
    """Run the pipeline on `root` when its tracked data differs from the last run's; register and promote."""
    import os

    from components.config.params import load_params
    from flows.releasing import data_changed, release

    rootp = Path(root).resolve()
    prefect_env(rootp)
    os.chdir(rootp)  # the stages and DVC work from the project root
    if only_if_data_changed and not data_changed(rootp, load_params(rootp / "params.yaml")):
        print("tracked data unchanged since the last run: nothing to do")
        return {"skipped": True, "passed": None, "version": None, "promoted": None}
    return {"skipped": False, **release(rootp, None, promote_to or None)}
