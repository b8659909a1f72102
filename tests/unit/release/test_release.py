"""Promotion rules, the data watcher's debouncing, the Prefect deployment and the CI workflow files.

The end-to-end walkthrough (CI scripts, watcher run, register, promote, rollback, serve production,
kill during promotion, DVC remote) runs on a real project in test_pipeline_e2e.py.
"""

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from components.release.policy import check_promotion
from conftest import ROOT


def version(v: str, gates: bool = True, **metrics) -> dict:
    return {"version": v, "lineage": {"gates_passed": gates, "metrics": metrics}}


def test_promotion_refuses_failed_gates_and_regressions_beyond_the_tolerance():
    prod = version("v0.0.1", **{"rouge-l": 50.0, "bleu-4": 30.0})
    assert check_promotion(version("v0.0.2", **{"rouge-l": 49.5, "bleu-4": 31.0}), prod, 1.0) == []
    problems = check_promotion(version("v0.0.2", **{"rouge-l": 48.9, "bleu-4": 30.0}), prod, 1.0)
    assert len(problems) == 1 and "rouge-l 48.90 regresses against production v0.0.1 (50.00" in problems[0]
    assert "did not pass its quality gates" in check_promotion(version("v0.0.3", gates=False, **{"rouge-l": 60.0}), prod, 1.0)[0]
    assert check_promotion(version("v0.0.1", **{"rouge-l": 50.0}), None, 1.0) == []  # first production version
    assert check_promotion(prod, prod, 1.0) == []


def test_promotion_compares_the_questions_both_versions_answered():
    """Data grew between versions: the candidate answered 20 questions, production 10 of them. Paired by question
    id, the candidate is as good on the shared 10 although its mean over all 20 is lower; and a real regression
    on the shared questions is refused whatever the means say."""
    def rows(pairs):
        return {i: {"id": i, "scores": {"rouge-l": r, "exact_match": e}} for i, (r, e) in pairs.items()}

    prod_rows = rows({f"q{i}": (80.0, 100.0) for i in range(10)})
    grown = rows({**{f"q{i}": (80.0, 100.0) for i in range(10)}, **{f"n{i}": (20.0, 0.0) for i in range(10)}})
    prod, cand = version("v0.0.1", **{"rouge-l": 80.0}), version("v0.0.2", **{"rouge-l": 50.0})
    assert check_promotion(cand, prod, 1.0) != []  # the means alone: refused (50 vs 80)
    assert check_promotion(cand, prod, 1.0, grown, prod_rows) == []  # the same questions: no regression
    worse = rows({f"q{i}": (80.0, 0.0) for i in range(10)})  # same wording, every fact lost
    problems = check_promotion(version("v0.0.3", **{"rouge-l": 99.0}), prod, 1.0, worse, prod_rows)
    assert len(problems) == 1 and "exact_match -100.00 against production v0.0.1 on the 10 questions both answered" in problems[0]


def watch_project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("data:\n  path: d.jsonl\n")
    (tmp_path / "d.jsonl").write_text('{"question": "q?", "answer": "a"}\n')
    return tmp_path


def test_watcher_debounces_a_burst_of_edits_into_one_run_and_sees_edits_made_during_a_run(tmp_path):
    from flows.releasing import watch

    root = watch_project(tmp_path)
    data = root / "d.jsonl"
    runs: list[str] = []
    in_run = threading.Event()

    def on_change():
        runs.append(data.read_text())
        # stand in for the pipeline: record the data as run (what dvc.lock's validate entry holds)
        import hashlib

        md5 = hashlib.md5(data.read_bytes()).hexdigest()
        (root / "dvc.lock").write_text(yaml.safe_dump({"stages": {"validate": {"deps": [{"path": "d.jsonl", "md5": md5}]}}}))
        if len(runs) == 1:
            in_run.set()
            time.sleep(0.5)
        return {"passed": True}

    result: list = []
    t = threading.Thread(target=lambda: result.extend(watch(root, interval=0.05, debounce=0.4, max_runs=2, on_change=on_change)))
    t.start()
    for i in range(5):  # a burst of edits, each sooner than the debounce: one run, on the last content
        data.write_text(f'{{"question": "q{i}?", "answer": "a"}}\n')
        time.sleep(0.1)
    assert in_run.wait(10)
    data.write_text('{"question": "during the run?", "answer": "a"}\n')  # edited while the pipeline runs
    t.join(20)
    assert not t.is_alive()
    assert runs == ['{"question": "q4?", "answer": "a"}\n', '{"question": "during the run?", "answer": "a"}\n']
    assert result == [{"passed": True}, {"passed": True}]


def test_watcher_does_not_run_for_data_the_last_run_already_used(tmp_path):
    import hashlib

    from flows.releasing import data_changed, watch
    from components.config.params import load_params

    root = watch_project(tmp_path)
    md5 = hashlib.md5((root / "d.jsonl").read_bytes()).hexdigest()
    (root / "dvc.lock").write_text(yaml.safe_dump({"stages": {"validate": {"deps": [{"path": "d.jsonl", "md5": md5}]}}}))
    assert not data_changed(root, load_params(root / "params.yaml"))
    runs = []
    t = threading.Thread(target=watch, args=(root, 0.05, 0.2, 1), kwargs={"on_change": lambda: runs.append(1) or {"passed": True}},
                         daemon=True)
    t.start()
    time.sleep(1.0)
    assert runs == []  # nothing changed since the last run
    (root / "d.jsonl").write_text('{"question": "new?", "answer": "b"}\n')
    t.join(10)
    assert runs == [1]


def test_prefect_deployment_file_points_at_a_flow_that_skips_unchanged_data(tmp_path, monkeypatch):
    import hashlib

    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "infra" / "prefect" / "prefect.yaml").read_text())
    pools = {"peftpipe-process": "process-pool.json", "peftpipe-k8s": "kubernetes-pool.json"}
    for d in spec["deployments"]:
        assert d["work_pool"]["name"] in pools and d["concurrency_limit"] == 1
        template = json.loads((ROOT / "infra" / "prefect" / pools[d["work_pool"]["name"]]).read_text())
        assert {"job_configuration", "variables"} <= set(template)
        flow = load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
        assert flow.name == "peftpipe-release" and set(d["parameters"]) <= set(flow.parameters.properties)
    triggers = spec["deployments"][0]["triggers"]
    assert triggers[0]["expect"] == ["peftpipe.data.changed"]
    # the flow body: data the last run used -> nothing to do, no pipeline started
    root = watch_project(tmp_path)
    md5 = hashlib.md5((root / "d.jsonl").read_bytes()).hexdigest()
    (root / "dvc.lock").write_text(yaml.safe_dump({"stages": {"validate": {"deps": [{"path": "d.jsonl", "md5": md5}]}}}))
    monkeypatch.chdir(tmp_path)
    assert flow.fn(root=str(root)) == {"skipped": True, "passed": None, "version": None, "promoted": None}


WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.mark.parametrize("name,script,event", [("pr.yml", "scripts/ci/pr.sh", "pull_request"),
                                               ("main.yml", "scripts/ci/main.sh", "push"),
                                               ("release.yml", "scripts/ci/release.sh", "workflow_dispatch")])
def test_ci_workflows_are_valid_yaml_that_call_the_project_scripts(name, script, event):
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert event in on
    runs = [step.get("run", "") for job in wf["jobs"].values() for step in job["steps"]]
    assert any(script in r for r in runs), runs
    assert (ROOT / script).exists() and any("scripts/setup.sh" in r for r in runs)
