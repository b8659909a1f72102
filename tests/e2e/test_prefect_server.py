"""The Prefect deployment for real: a Prefect server (SQLite, loopback), the process work pool and the deployment
from infra/prefect, a worker; a data row changes, `peftpipe watch --emit-event` sends peftpipe.data.changed, the
trigger starts the release flow, and a new version lands in staging. Everything started here is stopped."""

import os
import shutil
import subprocess
import time

import httpx
import pytest

from conftest import BIN, GIT_IDENTITY, ROOT, edit_a_training_row, free_port, make_project, sh

pytestmark = pytest.mark.prefect_server
RELEASE_FLOW = "peftpipe-release"


def wait_for(check, timeout: float, every: float = 1.0, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def flow_runs(api: str) -> list[dict]:
    try:
        r = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}, timeout=10)
        return r.json() if r.status_code == 200 else []
    except httpx.HTTPError:
        return []


def test_a_data_change_event_runs_the_deployed_release_on_a_prefect_server(tiny_model_dir, tmp_path):
    from components.config.params import write_overrides
    from conftest import RELAXED_GATES

    proj = make_project(tmp_path / "proj")
    shutil.copy(ROOT / "data" / "qa.jsonl.dvc", proj / "data" / "qa.jsonl.dvc")
    shutil.copytree(ROOT / "infra" / "prefect", proj / "infra" / "prefect")
    shutil.copytree(ROOT / "flows", proj / "flows", ignore=shutil.ignore_patterns("__pycache__"))  # the entrypoint
    write_overrides(proj / "params.yaml", [f"model.source={tiny_model_dir}", "train.steps=6", "train.batch_size=8",
                                           "train.lr=0.02", "evaluate.max_samples=6", "evaluate.max_new_tokens=6",
                                           "export.max_new_tokens=4", "export.parity_samples=1", "merge.check_samples=1",
                                           "export.quantize=[]"] + RELAXED_GATES)
    sh(["git", "add", "-A"], proj)
    sh(["git", "commit", "-qm", "params for the tiny model"], proj)
    sh([str(BIN / "peftpipe"), "data", "generate", "--out", "data/qa.jsonl"], proj)

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(GIT_IDENTITY, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", DVC_NO_ANALYTICS="1",
               PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",  # only the event may start a run
               PREFECT_LOGGING_LEVEL="WARNING")
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("server", "worker", "watch")}
    procs = []

    def start(name, args, **kw):
        procs.append(subprocess.Popen(args, cwd=proj, env={**env, **kw}, stdout=logs[name], stderr=subprocess.STDOUT))
        return procs[-1]

    def log(name) -> str:
        return (tmp_path / f"{name}.log").read_text()[-4000:]

    try:
        server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        procs.append(subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      cwd=tmp_path, env=server_env, stdout=logs["server"], stderr=subprocess.STDOUT))
        wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200 if _up(api) else False, 180,
                 what="the Prefect server\n" + log("server"))
        sh([str(BIN / "prefect"), "work-pool", "create", "peftpipe-process", "--type", "process",
            "--base-job-template", "infra/prefect/process-pool.json"], proj, env=env)
        sh([str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", "infra/prefect/prefect.yaml",
            "--name", "peftpipe-release-on-data-change"], proj, env=env)
        start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "peftpipe-process", "--limit", "1"],
              PEFTPIPE_ROOT=str(proj))
        watcher = start("watch", [str(BIN / "peftpipe"), "watch", "--emit-event", "--interval", "0.5", "--debounce", "1",
                                  "--max-runs", "1"])
        wait_for(lambda: "watching" in log("watch"), 120, 0.5, "the watcher")
        edit_a_training_row(proj / "data" / "qa.jsonl")
        assert watcher.wait(timeout=120) == 0, log("watch")
        assert "emitted peftpipe.data.changed" in log("watch") and "not sent" not in log("watch"), log("watch")

        def finished():
            runs = [r for r in flow_runs(api) if r.get("deployment_id")  # the deployment's runs (not the pipeline subflow)
                    and r.get("state_type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            return runs or None

        runs = wait_for(finished, 900, 3, "the release flow run\nworker:\n" + log("worker"))
        assert [r["state_type"] for r in runs] == ["COMPLETED"], log("worker")
        assert runs[0]["parameters"]["only_if_data_changed"] is True  # the trigger's parameters
        tags = sh(["git", "tag", "--list", "qa-model*"], proj).stdout.split()
        assert any(t.startswith("qa-model@v0.0.1") for t in tags), (tags, log("worker"))
        assert any(t.startswith("qa-model#staging#") for t in tags), tags
        assert (proj / "bundle" / "model.onnx").exists()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()


def _up(api: str) -> bool:
    try:
        httpx.get(f"{api}/health", timeout=2)
        return True
    except httpx.HTTPError:
        return False
