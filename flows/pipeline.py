"""The Prefect flow: every dvc.yaml stage as a task, in the graph's order, run through `dvc repro`.

The stage graph is read from DVC (no second copy here); DVC decides what is stale, so a stage
whose deps and params did not change is skipped. Retries come from a stage's `meta.retries`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from components.core.runtime import quiet_env


def prefect_env(root: Path) -> None:
    """Prefect on its embedded ephemeral server, project-local, no analytics, quiet."""
    quiet_env()
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))


# DVC's advice after each stage; the summary at the end says what to look at instead.
DVC_HINTS = ("To track the changes with git", "\tgit add", "To enable auto staging", "\tdvc config core.autostage",
             "Use `dvc push`")


def stage_graph(root: str | Path = ".") -> list[dict]:
    """dvc.yaml's stages in topological order: [{name, retries, upstream}]."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        stages = [s for s in reversed(list(nx.topological_sort(graph))) if getattr(s, "cmd", None)]
        return [{"name": s.name, "retries": int((getattr(s, "meta", None) or {}).get("retries", 0)),
                 "upstream": sorted(d.addressing for d in nx.descendants(graph, s))} for s in stages]


def stale_stages(root: str | Path = ".") -> set[str]:
    """Stages (and .dvc data sources) whose deps, params or outs differ from dvc.lock: DVC's own status."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return set(repo.status())


def dvc_repro(stage: str, root: Path) -> dict:
    """Run one stage through DVC; returns whether it ran and how long it took.

    The stage's output is passed through as bytes: a progress bar's carriage returns stay carriage returns
    (a live bar on a terminal, one line in a log), lines are filtered for DVC's git advice."""
    t0 = time.perf_counter()
    env = dict(os.environ)  # dvc.yaml calls `peftpipe`: make this interpreter's one found first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    skipped = False
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    assert proc.stdout is not None

    def show(data: bytes) -> None:
        if out is not None:
            sys.stdout.flush()
            out.write(data)
            out.flush()
        else:  # a text-only stdout (captured in tests)
            sys.stdout.write(data.decode("utf-8", "replace"))

    pending = b""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if "didn't change, skipping" in line or "is cached - skipping" in line:
                skipped = True
            if not line.strip() or line.startswith(DVC_HINTS):
                continue
            show(raw + b"\n")
        if b"\r" in pending:  # a progress bar redrawing itself: show what it has drawn so far
            drawn, _, pending = pending.rpartition(b"\r")
            show(drawn + b"\r")
            pending = b"\r" + pending
    if pending.strip():
        show(pending + b"\n")
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}); see the message above")
    return {"stage": stage, "ran": not skipped, "seconds": round(time.perf_counter() - t0, 1)}


def build_flow():
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.cache_policies import NO_CACHE

    @flow(name="peftpipe", log_prints=False)
    def pipeline(root: str = ".") -> list[dict]:
        rootp = Path(root).resolve()
        results, ran = [], set()
        stale = stale_stages(rootp)
        for s in stage_graph(rootp):
            # up to date and nothing upstream reran: what `dvc repro` would decide, without starting it
            if s["name"] not in stale and not ran & set(s["upstream"]):
                print(f"Stage '{s['name']}' is up to date (dvc status), skipping", flush=True)
                results.append({"stage": s["name"], "ran": False, "seconds": 0.0})
                continue
            run = task(dvc_repro, name=s["name"], retries=s["retries"], retry_delay_seconds=5, cache_policy=NO_CACHE)
            results.append(run(s["name"], rootp))
            if results[-1]["ran"]:
                ran.add(s["name"])
        from flows.report import markdown_report

        create_markdown_artifact(key="peftpipe-report", markdown=markdown_report(rootp, results),
                                 description="metrics and every verdict")
        return results

    return pipeline


def run_pipeline(root: str | Path = ".") -> list[dict]:
    """Run the flow; a failing stage has printed its own one-line reason, so Prefect's traceback is muted."""
    import logging

    root = Path(root).resolve()
    prefect_env(root)
    stage_graph(root)  # a broken dvc.yaml or params.yaml fails here, before any server starts
    pipeline = build_flow()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pipeline(str(root))
