"""The benchmarks' cached cells are reused only when what made them is the same: the data's content (not its
path), the machine (a time budget buys other steps on another CPU) and the code; benchmarks themselves never run
here."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture
def keys(tmp_path):
    import methods
    import recipes

    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    work = str(tmp_path / "work")

    def now() -> dict[str, str]:
        r = recipes.parse_args(["--data", str(data), "--workdir", work])
        m = methods.parse_args(["--data", str(data), "--workdir", work, "--minutes", "6"])
        return {"recipes": recipes.cell_key(r, "lora", 1e-3), "recipes_zero_shot": recipes.cell_key(r, None, None),
                "methods": methods.config_key(m, "lora")}

    return data, now


def test_a_data_edit_under_the_same_path_invalidates_every_cell(keys):
    data, now = keys
    before = now()
    assert now() == before  # deterministic
    data.write_text('{"question": "What is 2+2?", "answer": "four"}\n')
    after = now()
    assert all(after[k] != before[k] for k in before), (before, after)


def test_another_cpu_invalidates_every_cell(keys, monkeypatch):
    from components.core import runtime

    _, now = keys
    before = now()
    real = runtime.machine()
    monkeypatch.setattr(runtime, "machine", lambda: {**real, "isa": sorted({*real["isa"], "amx_bf16"} - {"avx2"})})
    after = now()
    assert all(after[k] != before[k] for k in before), (before, after)
    monkeypatch.setattr(runtime, "machine", lambda: {**real, "load_average": [9.9, 9.9, 9.9]})
    assert now() == before  # the load is recorded with a result, not part of what made it
