from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# xdist workers share the cores: each takes its share (torch's default, and `train.threads: 0`, would each take all
# of them, and oversubscribed threads spin against each other). Set before torch is imported; subprocesses inherit it.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

from components.core.runtime import quiet_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
quiet_env()
# `precision: auto` caches its measured choice; test runs (and their subprocesses) keep theirs out of ~/.cache
os.environ.setdefault("PEFTPIPE_CACHE_DIR", str(Path(__import__("tempfile").mkdtemp(prefix="peftpipe-test-cache-"))))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with a BPE tokenizer trained on the embedded questions and answers."""
    from tiny import build_tiny_model

    from components.data.datagen import generate_rows

    rows = generate_rows()
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", [r["question"] + " " + r["answer"] for r in rows])


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models of every family in tests/families.py (llama, qwen2, qwen3, mistral, gemma2, gemma3, phi3)."""
    from families import FAMILIES, build_family

    from components.data.datagen import generate_rows

    texts = [r["question"] + " " + r["answer"] for r in generate_rows()]
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root / name, texts) for name in FAMILIES}


def tiny_overrides(tmp: Path, tiny_model_dir: Path, extra: list[str] | None = None) -> list[str]:
    """`-S` overrides for fast runs on the tiny model, with every path under tmp (the data written there)."""
    from components.data.datagen import write_dataset
    from components.config.params import Paths

    data = tmp / "qa.jsonl"
    if not data.exists():
        write_dataset(data)
    paths = [f"paths.{k}={tmp / v}" for k, v in Paths().model_dump().items()]
    return paths + [f"model.source={tiny_model_dir}", f"data.path={data}", "train.steps=30", "train.lr=0.02",
                    "train.batch_size=8", "evaluate.max_samples=12", "export.max_new_tokens=8",
                    "evaluate.max_new_tokens=12", "train.checkpoint_every=10", "evaluate.drift_max_new_tokens=8",
                    "prepare.max_length=128",  # fixed rows (auto is tested on its own); packing needs the room
                    # numeric tests compare fp32 results: precision pinned, whatever the CPU offers
                    "train.precision=fp32",
                    "gates.min_samples=1"] + (extra or [])  # evaluate.max_samples=12: below the default 50


def tiny_params(tmp: Path, tiny_model_dir: Path, extra: list[str] | None = None):
    """Params for fast runs on the tiny model, with every path under tmp."""
    from components.config.params import load_params

    return load_params(ROOT / "params.yaml", tiny_overrides(tmp, tiny_model_dir, extra))


def make_project(dest: Path) -> Path:
    """A fresh git + DVC checkout of this project's pipeline files in dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy(ROOT / "data" / "drift_prompts.jsonl", dest / "data" / "drift_prompts.jsonl")  # the evaluate stages' dep
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=dest, check=True, env=env)
    return dest


@pytest.fixture(scope="session")
def exported(tiny_model_dir, tmp_path_factory):
    """A LoRA run on the tiny model taken through every stage to an ONNX bundle: (params, merge report, parity)."""
    tmp = tmp_path_factory.mktemp("export")
    p = tiny_params(tmp, tiny_model_dir, RELAXED_GATES + ["export.max_quant_rouge_l_drop=100", "export.quant_eval_samples=6",
                                                 "export.quantize=[int8,int4]"])
    merge_report, parity = run_all_stages(p)
    return p, merge_report, parity


def run_all_stages(p):
    """Every stage in order, in-process, on params p (paths under its tmp): (merge report, export parity)."""
    from components.data.prepare import run_prepare
    from components.data.validate import run_validate
    from components.deploy.export import run_export
    from components.deploy.merge import run_merge
    from components.evaluation.evaluate import run_evaluate
    from components.evaluation.gates import run_gate
    from components.model.base_model import materialise
    from components.training.train import run_train

    P = p.paths
    materialise(p.model, P.base_model)
    run_validate(p.data, p.validate_, P.validated)
    run_prepare(P.validated, P.base_model, p.prepare, P.prepared)
    run_train(p, P.base_model, P.prepared, P.train, P.train + "_ckpt", progress=False)
    run_evaluate(p, "base", P.base_model, P.prepared, None, P.eval_base)
    run_evaluate(p, "tuned", P.base_model, P.prepared, P.train, P.eval, P.eval_base)
    run_gate(P.eval_base, P.eval, P.train, p.gates, P.gate)
    return run_merge(p, P.base_model, P.prepared, P.train, P.merged), \
        run_export(p, P.merged, P.prepared, P.eval_base, P.eval, P.gate, P.bundle)


# helpers shared by several test files (imported as `from conftest import ...`)
BIN = Path(sys.executable).parent
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
SECRETS = {"HF_TOKEN": "hf_secretvalue4tests", "PEFTPIPE_SERVE_TOKEN": "serve-secret-4-tests"}
# a random tiny model babbles: only the training-health gate and a floor of 0 stay strict
RELAXED_GATES = ["gates.min_scores.rouge-l=0", "gates.min_gain.rouge-l=-100", "gates.require_significant_gain=false",
                 "gates.min_scores.exact_match=0", "gates.min_gain.exact_match=-100", "gates.min_samples=1",
                 "gates.max_empty_rate=1", "gates.max_repeated_ngram_rate=1", "gates.min_length_ratio=0",
                 "gates.max_length_ratio=1000"]


def sh(args, cwd, check=True, env=None):
    """Run a command with the venv's tools first on PATH, the test secrets and a git identity set."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1", **SECRETS,
           **GIT_IDENTITY, **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def ran_stages(output: str) -> list[str]:
    import re

    return re.findall(r"Running stage '([a-z_]+)'", output)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_with(params, folder: Path) -> Path:
    """A folder whose params.yaml is `params` (outputs may live outside it, in tmp)."""
    import yaml

    from components.config.params import params_dict

    folder.mkdir(parents=True, exist_ok=True)
    raw = {**params_dict(params), "allow_outside_project": True}  # the test's data and outputs live in tmp
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder



def crash_training_at(monkeypatch, call: int):
    """Make the train loop's `call`-th batch raise KeyboardInterrupt (a crash mid-run); returns the real collate
    (setattr it back to train on)."""
    from components.training import batches

    real, calls = batches.collate, {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(batches, "collate", crashing)
    return real


def edit_a_training_row(data: Path) -> None:
    """Change one row of a QA file that the default split puts in train (its answer's '.' become '!')."""
    import json

    from components.config.params import PrepareConfig
    from components.data.prepare import in_test_split

    cfg = PrepareConfig()
    lines = data.read_text().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if not in_test_split(json.loads(line)["question"], cfg.split_seed,
                                                                     cfg.test_fraction))
    row = json.loads(lines[i])
    lines[i] = json.dumps({**row, "answer": row["answer"].replace(".", "!")}, sort_keys=True) + "\n"
    data.write_text("".join(lines))

# The longest files first: with one file per worker at a time (`--dist loadfile`), a long file
# collected last would run alone at the end while the other worker idles.
LONGEST_FIRST = ("test_embedded_e2e.py", "test_pipeline_e2e.py", "test_methods.py", "test_merge_export.py", "test_prefect_server.py",
                 "test_crash_resume.py", "test_distributed.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: order kept within a file
