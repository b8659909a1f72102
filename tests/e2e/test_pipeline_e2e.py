"""The whole flow (Prefect over dvc.yaml) on the tiny model, in a fresh git + DVC checkout."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, RELAXED_GATES, ROOT, SECRETS, edit_a_training_row, free_port, make_project, ran_stages, sh

@pytest.fixture(scope="module")
def project(tiny_model_dir, tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("e2e") / "proj")
    shutil.copy(ROOT / "data" / "qa.jsonl.dvc", proj / "data" / "qa.jsonl.dvc")
    overrides = [f"model.source={tiny_model_dir}", "train.steps=12", "train.batch_size=8", "train.lr=0.02",
                 "train.checkpoint_every=5",
                 "evaluate.max_samples=8", "evaluate.max_new_tokens=10", "export.max_new_tokens=6",
                 "export.parity_samples=2", "merge.check_samples=2", "export.quantize=[]"] + RELAXED_GATES
    args = [str(BIN / "peftpipe"), "run"] + [x for o in overrides for x in ("-S", o)]
    proc = sh(args, proj)
    return proj, proc.stdout + proc.stderr


def test_run_produces_bundle_metrics_and_summary(project):
    proj, out = project
    assert (proj / "data" / "qa.jsonl").exists()  # generated, and matching the DVC-tracked hash (below)
    stages = ran_stages(out)  # every stage ran once, in an order that respects the graph
    assert sorted(stages) == sorted(["base_model", "validate", "prepare", "train", "evaluate_base", "evaluate",
                                     "gate", "merge", "export"])
    assert stages.index("train") < stages.index("evaluate") < stages.index("gate") < stages.index("merge") < stages.index("export")
    assert "ROUGE-L" in out and "PASS" in out and "bundle:" in out
    assert (proj / "bundle" / "model.onnx").exists() and (proj / "bundle" / "checksums.sha256").exists()
    validate = json.loads((proj / "metrics" / "validate.json").read_text())
    assert validate["rows_in"] == validate["rows_kept"] + validate["rows_quarantined"] == 1012
    status = sh([sys.executable, "-m", "dvc", "status", "data/qa.jsonl.dvc"], proj).stdout
    assert "up to date" in status
    assert "lr: 0.02" in (proj / "params.yaml").read_text()  # -S is recorded, as with dvc exp run -S


def test_secrets_in_the_environment_reach_no_output_or_artifact(project):
    proj, out = project
    for secret in SECRETS.values():
        assert secret not in out
        for f in [*(proj / "metrics").rglob("*"), *(proj / "bundle").rglob("*"), *(proj / "artifacts").rglob("*.json*"),
                  proj / "params.yaml", proj / "dvc.lock"]:
            if f.is_file() and f.stat().st_size < 50_000_000:
                assert secret.encode() not in f.read_bytes(), f


def test_repro_after_run_does_nothing(project):
    proj, _ = project
    out = sh([sys.executable, "-m", "dvc", "repro"], proj).stdout
    assert ran_stages(out) == []
    assert "Data and pipelines are up to date" in out


def test_gate_change_reruns_only_gate_onwards(project):
    proj, _ = project
    params = (proj / "params.yaml").read_text()
    (proj / "params.yaml").write_text(params.replace("rouge-l: -100", "rouge-l: -99"))
    out = sh([sys.executable, "-m", "dvc", "repro"], proj).stdout
    assert ran_stages(out) == ["gate", "merge", "export"]


def registry(proj: Path) -> list[dict]:
    """Registered versions (newest first) with lineage and stages, through the CLI."""
    return json.loads(sh([str(BIN / "peftpipe"), "registry", "--json"], proj).stdout)


def in_stage(proj: Path, stage: str) -> str | None:
    return in_stage_of(proj, "qa-model", stage)


def in_stage_of(proj: Path, name: str, stage: str) -> str | None:
    from components.release.registry import current

    return current(proj, name, stage)


def tags(proj: Path) -> list[str]:
    return sh(["git", "tag", "-l"], proj).stdout.split()


def test_ci_main_script_registers_with_lineage_and_promotes_to_staging(project, tmp_path):
    from components.release.lineage import params_hash
    from components.config.params import load_params

    proj, _ = project
    source = sh(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    summary = tmp_path / "summary.md"
    remote = proj.parent / "dvc-remote"  # a local-directory DVC remote: main.sh pushes the bundle there
    sh([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], proj)
    out = sh(["bash", str(ROOT / "scripts" / "ci" / "main.sh")], proj, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert ran_stages(out.stdout) == []  # the run is up to date: DVC reuses every stage
    assert "pushed the DVC cache" in out.stdout and remote.is_dir()
    rows = registry(proj)
    assert [r["version"] for r in rows] == ["v0.0.1"] and rows[0]["stages"] == ["staging"]
    lin = rows[0]["lineage"]
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert lin["gates_passed"] is True and lin["source_commit"] == source
    assert lin["data"]["md5"] == hashlib.md5((proj / "data" / "qa.jsonl").read_bytes()).hexdigest()
    assert lin["bundle"]["md5"] == next(o["md5"] for o in lock["stages"]["export"]["outs"])
    assert lin["params_sha256"] == params_hash(load_params(proj / "params.yaml"))
    assert lin["metrics"]["rouge-l"] == json.loads((proj / "metrics" / "evaluate.json").read_text())["rouge-l"]
    # the version's tag points at a commit that records exactly what made it
    at = lambda path: sh(["git", "show", f"qa-model@v0.0.1:{path}"], proj).stdout  # noqa: E731
    assert at("dvc.lock") == (proj / "dvc.lock").read_text() and at("params.yaml") == (proj / "params.yaml").read_text()
    assert yaml.safe_load(at("data/qa.jsonl.dvc"))["outs"][0]["md5"] == lin["data"]["md5"]
    assert json.loads(at("metrics/evaluate.json")) == json.loads((proj / "metrics" / "evaluate.json").read_text())
    assert "v0.0.1" in summary.read_text() and "ROUGE-L" in summary.read_text()


def test_ci_release_script_promotes_staging_to_production(project, tmp_path):
    proj, _ = project
    sh(["bash", str(ROOT / "scripts" / "ci" / "release.sh")], proj, env={"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")})
    assert in_stage(proj, "production") == "v0.0.1"
    again = sh([str(BIN / "peftpipe"), "promote", "--to", "production"], proj)
    assert "already in production" in again.stdout
    assert len([t for t in tags(proj) if t.startswith("qa-model#production#")]) == 1  # no second assignment


def test_watcher_reruns_on_a_data_row_change_then_registers_and_promotes_to_staging(project, tmp_path):
    """A train-split row edit: the watcher reruns validate onwards (the base model and its evaluation are
    reused), registers v0.0.2 with the new data hash and puts it in staging; production stays."""

    proj, _ = project
    log = tmp_path / "watch.log"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "w") as f:
        watcher = subprocess.Popen([str(BIN / "peftpipe"), "watch", "--interval", "0.5", "--debounce", "1.5",
                                    "--max-runs", "1"], cwd=proj, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while "watching" not in log.read_text() and time.time() < deadline:
            time.sleep(0.5)
        data = proj / "data" / "qa.jsonl"
        edit_a_training_row(data)
        assert watcher.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        watcher.kill()
    text = log.read_text()
    assert "data changed: data/qa.jsonl" in text and "running the pipeline" in text
    assert ran_stages(text) == ["validate", "prepare", "train", "evaluate", "gate", "merge", "export"], text[-3000:]
    trained = json.loads((proj / "metrics" / "train.json").read_text())  # checkpoints every 5 of 12 steps:
    assert trained["resumed_at"] == 0 and "resuming from" not in text  # the new data trains from step 0
    assert trained["data_sha256"] == json.loads((proj / "metrics" / "prepare.json").read_text())["content_sha256"]
    rows = registry(proj)
    assert [r["version"] for r in rows] == ["v0.0.2", "v0.0.1"]
    new = rows[0]["lineage"]
    assert new["data"]["md5"] == hashlib.md5(data.read_bytes()).hexdigest() != rows[1]["lineage"]["data"]["md5"]
    assert in_stage(proj, "staging") == "v0.0.2" and in_stage(proj, "production") == "v0.0.1"
    assert "up to date" in sh([sys.executable, "-m", "dvc", "status", "data/qa.jsonl.dvc"], proj).stdout


def test_promotion_is_gated_rollback_restores_and_the_server_follows_production(project):
    from components.serving.load_test import wait_until_healthy
    from components.config.params import write_overrides

    import gto.api

    from components.release.vcs import ensure_identity as _ensure_identity

    proj, _ = project
    _ensure_identity(proj)  # tags made here need an author on machines without a git identity
    # the refusals, on a second model whose versions' lineage says: production 50, then a regression, then failed gates
    def lineage(rouge: float, passed: bool = True) -> str:
        return json.dumps({"gates_passed": passed, "metrics": {"rouge-l": rouge}, "bundle": {"md5": f"x{rouge}{passed}"}})

    for v, (rouge, passed) in {"v1.0.0": (50.0, True), "v1.0.1": (48.5, True), "v1.0.2": (70.0, False)}.items():
        sh(["git", "commit", "-q", "--allow-empty", "-m", f"probe {v}"], proj)  # GTO: one version per commit
        gto.api.register(str(proj), "probe-model", "HEAD", version=v, message=lineage(rouge, passed))
        time.sleep(1.01)  # GTO orders events by their tags' whole-second timestamps
    gto.api.assign(str(proj), "probe-model", "production", version="v1.0.0")
    write_overrides(proj / "params.yaml", ["registry.name=probe-model", "gates.max_regression=1.0"])
    try:
        for v, why in (("v1.0.1", "rouge-l 48.50 regresses against production v1.0.0 (50.00; at most 1 points lower allowed)"),
                       ("v1.0.2", "v1.0.2 did not pass its quality gates")):
            refused = sh([str(BIN / "peftpipe"), "promote", "--to", "production", "--version", v], proj, check=False)
            assert refused.returncode == 1 and f"refusing to promote probe-model {v} to production" in refused.stderr
            assert why in refused.stderr, refused.stderr
            assert in_stage_of(proj, "probe-model", "production") == "v1.0.0"
    finally:
        write_overrides(proj / "params.yaml", ["registry.name=qa-model", "gates.max_regression=100"])

    import httpx

    port = free_port()
    server = subprocess.Popen([str(BIN / "peftpipe"), "serve", "--port", str(port), "--max-new-tokens-limit", "8",
                               "--follow", "0.5"], cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def serving(version: str) -> bool:  # the server follows the registry's production stage
        deadline = time.time() + 60
        while time.time() < deadline:
            meta = httpx.get(f"{url}/metadata").json()
            if meta["registry"] == {"name": "qa-model", "version": version, "stage": "production"}:
                return meta["bundle"].endswith(f"qa-model/{version}")
            time.sleep(0.5)
        return False

    try:
        assert wait_until_healthy(url, timeout=120), server.stdout.read() if server.poll() is not None else "no answer"
        assert serving("v0.0.1")
        sh([str(BIN / "peftpipe"), "promote", "--to", "production"], proj)
        assert in_stage(proj, "production") == "v0.0.2" and serving("v0.0.2")
        out = sh([str(BIN / "peftpipe"), "rollback"], proj)
        assert "v0.0.2 -> v0.0.1" in out.stdout and in_stage(proj, "production") == "v0.0.1"
        assert in_stage(proj, "staging") == "v0.0.2"  # rollback touches production only
        assert serving("v0.0.1")
        r = httpx.post(f"{url}/generate", json={"prompt": "What is the capital of Kenya?", "max_new_tokens": 4}, timeout=60)
        assert r.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "production is now qa-model v0.0.2" in server.stdout.read()


def test_kill_during_promotion_leaves_a_complete_production(project):
    """SIGKILL `peftpipe promote` while it writes the bundle and at random moments: production is the old
    or the new version, never a partial bundle, and the next promotion completes."""
    import random

    from components.bundle.format import verify_checksums
    from components.release.deployments import deployment_dir
    from components.release.registry import materialise

    proj, _ = project
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    outcomes = []
    deploy = deployment_dir(proj, ".peftpipe/deployments", "qa-model", "v0.0.2")
    for when in ("mid-write", "mid-write", rng.uniform(0.5, 6.0), rng.uniform(0.5, 6.0)):
        for d in [deploy, *deploy.parent.glob(".v0.0.2.*.tmp")]:  # the version's bundle and what kills left
            shutil.rmtree(d, ignore_errors=True)
        proc = subprocess.Popen([str(BIN / "peftpipe"), "promote", "--to", "production", "--version", "v0.0.2"],
                                cwd=proj, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        if when == "mid-write":  # the moment the bundle's temporary folder appears
            while not list(deploy.parent.glob(".v0.0.2.*.tmp")) and proc.poll() is None and time.time() - t0 < 60:
                time.sleep(0.005)
        else:
            time.sleep(when)
        proc.kill()
        proc.wait()
        now = in_stage(proj, "production")
        outcomes.append((when if isinstance(when, str) else round(when, 2), round(time.time() - t0, 2), now))
        assert now in ("v0.0.1", "v0.0.2")
        verify_checksums(deployment_dir(proj, ".peftpipe/deployments", "qa-model", now))  # complete, unchanged
        if when == "mid-write":
            assert now == "v0.0.1" and not (deploy / "checksums.sha256").exists()
        if now == "v0.0.2":
            sh([str(BIN / "peftpipe"), "rollback"], proj)
    print(f"kill seed {seed}: (when, killed after s, production after the kill) {outcomes}")
    sh([str(BIN / "peftpipe"), "promote", "--to", "production", "--version", "v0.0.2"], proj)
    assert in_stage(proj, "production") == "v0.0.2"
    verify_checksums(materialise(proj, "qa-model", "v0.0.2", ".peftpipe/deployments"))
    sh([str(BIN / "peftpipe"), "rollback"], proj)
    from components.config.params import write_overrides

    write_overrides(proj / "params.yaml", ["gates.max_regression=1.0"])  # back to the run's value: stages stay cached


def test_ci_pr_script_reports_metrics_diff_and_gates_and_the_dvc_remote_serves_a_version(project, tmp_path):
    from components.release.registry import materialise

    proj, _ = project
    summary = tmp_path / "pr.md"
    overrides = ["-S", "train.steps=12", "-S", "evaluate.max_samples=8"]  # this project's small params
    out = sh(["bash", str(ROOT / "scripts" / "ci" / "pr.sh"), *overrides], proj, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert ran_stages(out.stdout) == []
    text = summary.read_text()
    assert "gates passed" in text and "dvc metrics diff" in text and "metrics/evaluate.json" in text
    assert "PASS training_health" in text and "ROUGE-L" in text
    # the versions come back from the DVC remote alone (main.sh pushed v0.0.1's bundle there)
    assert [r["version"] for r in registry(proj)] == ["v0.0.2", "v0.0.1"]
    cache, aside = proj / ".dvc" / "cache", proj.parent / "cache-aside"
    cache.rename(aside)
    shutil.rmtree(proj / ".peftpipe" / "deployments")
    try:
        folder = materialise(proj, "qa-model", "v0.0.1", ".peftpipe/deployments")
        assert (folder / "model.onnx").exists() and not cache.exists()  # fetched from the remote alone
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        aside.rename(cache)  # the later tests' runs reuse their cached stages


def test_failing_gate_stops_before_merge_and_nothing_is_registered_or_promoted(project):
    proj, _ = project
    before = (tags(proj), in_stage(proj, "staging"), in_stage(proj, "production"))
    out = sh([str(BIN / "peftpipe"), "release", "-S", "gates.min_scores.rouge-l=101"], proj, check=False)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "FAIL min_rouge-l: rouge-l = " in text and "quality gate failed" in text
    assert "Traceback" not in text
    assert "merge" not in ran_stages(text) and "export" not in ran_stages(text)
    gates = json.loads((proj / "artifacts" / "gate" / "gates.json").read_text())
    assert gates["passed"] is False
    assert not (proj / "bundle").exists()  # the earlier bundle is withdrawn, nothing stale to deploy
    assert "nothing registered or promoted" in text
    assert (tags(proj), in_stage(proj, "staging"), in_stage(proj, "production")) == before


def test_diverging_training_fails_training_health_gate(project):
    proj, _ = project
    out = sh([str(BIN / "peftpipe"), "run", "-S", "gates.min_scores.rouge-l=0", "-S", "train.lr=1e30"], proj, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-2000:]
    assert "FAIL training_health:" in text and "at step" in text
    assert not (proj / "bundle").exists()




def test_a_method_that_cannot_merge_still_reaches_the_bundle(project):
    """P-Tuning v2 through the CLI: merge ships a KV prefix, export checks ONNX with it, generate uses it.
    (ICL's route is tested at component level in test_merge_export.py.)"""
    proj, _ = project
    method, shipped = "ptuning_v2", "prefix_kv.safetensors"
    out = sh([str(BIN / "peftpipe"), "run", "--method", method, "-S", "train.lr=0.02", "-S", "gates.min_scores.rouge-l=0"], proj)
    text = out.stdout + out.stderr
    assert ran_stages(text) == ["train", "evaluate", "gate", "merge", "export"], text[-2000:]
    merge = json.loads((proj / "metrics" / "merge.json").read_text())
    assert merge["method"] == method and merge["mergeable"] is False and "not mergeable" in merge["route"]
    card = json.loads((proj / "bundle" / "model_card.json").read_text())
    assert card["method"] == method and card["parity"]["greedy_tokens_equal"]
    assert (proj / "bundle" / shipped).exists()
    # the bundle serves from the CLI with its prefix or examples (a random tiny model may answer with EOS at once)
    sh([str(BIN / "peftpipe"), "generate", "--bundle", "bundle", "--max-new-tokens", "4", "--no-stream",
        "What is the capital of Kenya?"], proj)
    from fastapi.testclient import TestClient

    from components.bundle.loader import Bundle
    from components.serving.serve import create_app

    bundle = Bundle(proj / "bundle", variant="fp32")
    assert bundle.lm.prefix is not None  # the server decodes after the learned prefix too
    client = TestClient(create_app(bundle))
    assert client.get("/metadata").json()["method"] == method
    r = client.post("/generate", json={"prompt": "What is the capital of Kenya?", "max_new_tokens": 4})
    assert r.status_code == 200 and r.json()["text"] == bundle.answer("What is the capital of Kenya?", 4)


def test_a_sweep_runs_the_grid_as_dvc_experiments_and_applies_the_best(project):
    """`peftpipe sweep -S train.lr=...` (3 points): each is a DVC experiment that `dvc exp show` lists with its
    params and metrics; the table is sorted by the metric; --apply-best puts the winner's params in the workspace."""
    proj, _ = project
    before = (proj / "params.yaml").read_text()
    out = sh([str(BIN / "peftpipe"), "sweep", "-S", "train.lr=0.005,0.02,0.05", "--sort", "token_f1", "--apply-best"],
             proj)
    text = out.stdout + out.stderr
    assert text.count("] sweep-") == 3 and "sweep, best token_f1 first" in text, text[-3000:]
    shown = json.loads(sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], proj).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or []) if (e.get("name") or "").startswith("sweep-")]
    assert len(exps) == 3, json.dumps(shown)[:3000]
    f1 = {}  # lr -> token F1, as DVC recorded each experiment
    for e in exps:
        data = e["revs"][0]["data"]
        f1[data["params"]["params.yaml"]["data"]["train"]["lr"]] = data["metrics"]["metrics/evaluate.json"]["data"]["token_f1"]
    assert set(f1) == {0.005, 0.02, 0.05}
    table = [line for line in text.splitlines() if "train.lr=" in line and "│" in line]
    ranked = [float(re.search(r"train\.lr=([0-9.e-]+)", line).group(1)) for line in table]
    assert sorted(ranked) == sorted(f1)
    assert [f1[x] for x in ranked] == sorted(f1.values(), reverse=True)  # best first (ties keep the grid's order)
    assert f"lr: {ranked[0]}" in (proj / "params.yaml").read_text() and "applied the best run" in text
    (proj / "params.yaml").write_text(before)
