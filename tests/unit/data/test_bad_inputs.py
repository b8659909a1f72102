"""Bad-input corpus (tests/unit/data/bad_inputs): every case through `peftpipe stage validate`, in-process.

Each case ends in one clear `peftpipe: error:` line naming file, row and rule, or in quarantine entries
with rule and reason and rows_in == rows_kept + rows_quarantined; never in a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from peftpipe.cli import main

from conftest import ROOT

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))


def case_id(case: dict) -> str:
    return case.get("name") or Path(case.get("file") or case["path"]).stem


def copy_in(name: str, project: Path) -> None:
    src = CORPUS / name
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, project / name)


def test_corpus_has_at_least_30_cases_and_every_file_is_used():
    assert len(CASES) >= 30
    assert len({case_id(c) for c in CASES}) == len(CASES)
    used = {c[k] for c in CASES for k in ("file", "test_file") if k in c}
    on_disk = {p.name for p in CORPUS.iterdir() if p.name not in ("cases.yaml", "make_corpus.py", "__pycache__")}
    assert used == on_disk
    assert all(c["expect"] in ("error", "quarantine") for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PEFTPIPE_DEBUG", raising=False)
    overrides = [f"data.path={case.get('path') or case['file']}"]
    for key in ("file", "test_file"):
        if key in case:
            copy_in(case[key], tmp_path)
    if "test_file" in case:
        overrides.append(f"data.test_path={case['test_file']}")
    overrides += case.get("set", [])
    code = main(["stage", "validate", *[x for o in overrides for x in ("-S", o)]])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err

    if case["expect"] == "error":
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("peftpipe: error: "), err
        assert re.search(case["match"], lines[0]), f"{lines[0]!r} does not match {case['match']!r}"
        assert not (tmp_path / "metrics" / "validate.json").exists()
        return

    assert code == 0, err
    report = json.loads((tmp_path / "metrics" / "validate.json").read_text(encoding="utf-8"))
    validated = tmp_path / "artifacts" / "validated"
    quarantine = [json.loads(x) for x in (validated / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = [json.loads(x) for x in (validated / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
    for split in report["files"].values():
        assert split["rows_in"] == split["rows_kept"] + split["rows_quarantined"]
    assert report["rows_in"] == case["rows_in"]
    assert len(kept) == report["files"]["train"]["rows_kept"] and len(quarantine) == report["rows_quarantined"]
    assert report["by_rule"] == case["rules"]
    counts: dict[str, int] = {}
    for q in quarantine:
        assert Path(q["file"]).name in (case["file"], case.get("test_file")), q
        assert isinstance(q["row"], int) and q["row"] >= 1 and q["rule"] and q["reason"], q
        counts[q["rule"]] = counts.get(q["rule"], 0) + 1
    assert counts == case["rules"]
    if "rows" in case:
        assert [q["row"] for q in quarantine] == case["rows"]
    for pattern in case.get("reasons", []):
        assert any(re.search(pattern, q["reason"]) for q in quarantine), f"no reason matches {pattern!r}: {quarantine}"
