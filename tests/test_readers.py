"""Each reader on small files written here, including malformed variants."""

import json

import pandas as pd
import pytest

from components.data.readers import DataError, detect_format
from components.data.validate import run_validate
from components.core.config import DataConfig, ValidateConfig

N = 12


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def validate(tmp_path, path, **kw):
    report = run_validate(DataConfig(path=str(path), **kw), ValidateConfig(min_rows=5, max_quarantine_fraction=0.5),
                          tmp_path / "out")
    kept = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    quarantine = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
    return report, kept, quarantine


def test_alpaca_with_input_system_and_history(tmp_path):
    rows = [{"instruction": f"Translate item {i}.", "input": "bonjour" if i % 2 else "", "output": f"Item {i}: hello"}
            for i in range(N)]
    rows.append({"instruction": "Follow up?", "output": "Yes.", "system": "Be brief.", "history": [["Hi there", "Hello!"]]})
    rows.append({"instruction": "No output here"})
    report, kept, q = validate(tmp_path, jsonl(tmp_path / "a.jsonl", rows))
    assert report["format"] == "alpaca" and report["rows_kept"] == N + 1
    assert kept[1]["question"] == "Translate item 1.\n\nbonjour" and kept[0]["question"] == "Translate item 0."
    conv = kept[-1]["messages"]
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user", "assistant"]
    assert q[0]["rule"] == "required_fields" and q[0]["row"] == N + 2


def test_sharegpt_and_openai_messages(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]}
            for i in range(N)]
    rows.append({"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi, who are you?"},
                              {"role": "assistant", "content": "A bot."}, {"role": "user", "content": "And your name?"},
                              {"role": "assistant", "content": "Pipe."}]})
    bad = [
        {"conversations": [{"from": "human", "value": "Unanswered question?"}]},
        {"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]},
        {"messages": [{"role": "user", "content": "Twice?"}, {"role": "user", "content": "Twice!"},
                      {"role": "assistant", "content": "ok"}]},
        {"conversations": "not a list"},
    ]
    report, kept, q = validate(tmp_path, jsonl(tmp_path / "s.jsonl", rows + bad))
    assert report["format"] == "sharegpt" and report["rows_kept"] == N + 1
    assert kept[N]["question"] == "And your name?" and kept[N]["answer"] == "Pipe." and len(kept[N]["messages"]) == 5
    assert [x["rule"] for x in q] == ["messages", "messages", "messages", "required_fields"]
    assert "must end with an assistant reply" in q[0]["reason"] and "unknown role 'alien'" in q[1]["reason"]


def test_chatglm_prompt_response_history(tmp_path):
    rows = [{"prompt": f"问题{i}是什么？", "response": f"答案{i}。", "history": [["你好", "你好！"]] if i == 0 else []}
            for i in range(N)]
    rows.append({"prompt": "坏的历史", "response": "x", "history": [["only one"]]})
    report, kept, q = validate(tmp_path, jsonl(tmp_path / "c.jsonl", rows))
    assert report["format"] == "chatglm" and report["rows_kept"] == N
    assert [m["content"] for m in kept[0]["messages"]] == ["你好", "你好！", "问题0是什么？", "答案0。"]
    assert q[0]["rule"] == "history"


def test_chatglm_adgen_columns(tmp_path):
    rows = [{"content": f"类型#上衣*颜色#{i}", "summary": f"一件好看的上衣{i}。"} for i in range(N)]
    report, kept, _ = validate(tmp_path, jsonl(tmp_path / "adgen.json", rows), format="chatglm",
                               question_field="content", answer_field="summary")
    assert report["rows_kept"] == N and kept[0]["answer"] == "一件好看的上衣0。"


def test_text_format_splits_dolly_lines(tmp_path):
    rows = [{"text": f"### Human: Why is sky {i} blue? ### Assistant: Because of scattering {i}."} for i in range(N)]
    rows.append({"text": "no markers at all"})
    report, kept, q = validate(tmp_path, jsonl(tmp_path / "d.jsonl", rows))
    assert report["format"] == "text" and kept[0] == {"question": "Why is sky 0 blue?", "answer": "Because of scattering 0."}
    assert q[0]["rule"] == "text_pattern"


def test_csv_parquet_and_json_array(tmp_path):
    df = pd.DataFrame({"q": [f"Question {i}?" for i in range(N)], "a": [f"Answer {i}." for i in range(N)]})
    df.to_csv(tmp_path / "qa.csv", index=False)
    df.to_parquet(tmp_path / "qa.parquet")
    for name in ("qa.csv", "qa.parquet"):
        report, kept, _ = validate(tmp_path, tmp_path / name, question_field="q", answer_field="a")
        assert report["format"] == "qa" and report["rows_kept"] == N and kept[3]["answer"] == "Answer 3."
    arr = tmp_path / "qa.json"
    arr.write_text(json.dumps([{"question": f"Q number {i}?", "answer": "A."} for i in range(N)] + ["junk"]))
    report, _, q = validate(tmp_path, arr)
    assert report["rows_kept"] == N and q[0]["rule"] == "json" and q[0]["row"] == N + 1


def test_detection_and_declared_format_mismatch(tmp_path):
    f = jsonl(tmp_path / "x.jsonl", [{"instruction": "i", "output": "o"}])
    assert detect_format(f) == "alpaca"
    with pytest.raises(DataError, match="data.format is 'sharegpt' but the file looks like 'alpaca'"):
        run_validate(DataConfig(path=str(f), format="sharegpt"), ValidateConfig(), tmp_path / "out")


def test_multi_turn_labels_cover_assistant_turns_only(tiny_model_dir):
    from transformers import AutoTokenizer

    from components.data.chat import IGNORE_INDEX, encode_conversation, render

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of Peru?"},
            {"role": "assistant", "content": "Lima."}]
    ids, labels = encode_conversation(tok, msgs)
    learned = tok.decode([t for t, l in zip(ids, labels) if l != IGNORE_INDEX])
    assert learned == "Hello.<|im_end|>Lima.<|im_end|>"
    assert tok.decode(ids).replace("\n", "") == render(tok, msgs, False).replace("\n", "")


def test_data_inspect_cli_reports_and_writes_data_docs(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from peftpipe.cli import main

    rows = [{"instruction": f"Question number {i}?", "output": f"Answer {i}."} for i in range(N)]
    rows += [rows[0], {"instruction": "Only an instruction"}]
    f = jsonl(tmp_path / "alp.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    code = main(["data", "inspect", str(f), "--out", "insp", "-S", f"model.source={tiny_model_dir}",
                 "-S", "prepare.max_length=20", "-S", "validate.min_rows=5"])
    assert code == 0
    report = json.loads((tmp_path / "insp" / "inspect.json").read_text())
    assert report["format"] == "alpaca" and (report["rows_in"], report["rows_kept"]) == (N + 2, N)
    assert report["duplicates"] == 1 and report["quarantined_by_rule"]["required_fields"] == 1
    assert 0 < report["truncation_rate"] <= 1 and sum(b["rows"] for b in report["tokens"]["histogram"]) == N
    assert (tmp_path / "insp" / "data_docs" / "index.html").exists()
    assert "rows quarantined" in capsys.readouterr().out
