import hashlib

import yaml

from components.data.datagen import generate_rows, write_dataset
from conftest import ROOT


def test_dataset_is_large_unique_and_styled():
    rows = generate_rows()
    assert len(rows) >= 1000
    assert len({r["question"] for r in rows}) == len(rows)
    assert {r["topic"] for r in rows} == {"element", "country", "unit"}
    assert all(r["answer"].endswith(".") and len(r["answer"]) < 80 for r in rows)
    by_q = {r["question"]: r["answer"] for r in rows}
    assert by_q["What is the capital of France?"] == "The capital of France is Paris."
    assert by_q["What is the atomic number of gold?"] == "Gold has atomic number 79."
    assert by_q["How many metres are in 3 kilometres?"] == "3 kilometres is 3,000 metres."


def test_generation_matches_the_dvc_tracked_version(tmp_path):
    """The committed data/qa.jsonl.dvc pins the bytes; regeneration must reproduce them exactly."""
    out = tmp_path / "qa.jsonl"
    write_dataset(out)
    tracked = yaml.safe_load((ROOT / "data" / "qa.jsonl.dvc").read_text())["outs"][0]
    assert hashlib.md5(out.read_bytes()).hexdigest() == tracked["md5"]
    assert out.stat().st_size == tracked["size"]
