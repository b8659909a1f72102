"""Each reader on small files written here, including malformed variants."""

import json
from pathlib import Path

import pandas as pd
import pytest

from components.data.readers import detect_format
from components.data.records import DataError
from components.data.validate import question_id, run_validate
from components.config.params import DataConfig, ValidateConfig

N = 12


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def validate(tmp_path, path, **kw):
    report = run_validate(DataConfig(path=str(path), **kw), ValidateConfig(min_rows=5, max_quarantine_fraction=0.5),
                          tmp_path / "out")
    kept = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    quarantine = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"] + report["rows_left_out"]
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
    assert report["format"] == "text" and kept[0] == {"question": "Why is sky 0 blue?", "answer": "Because of scattering 0.",
                                                      "id": question_id("Why is sky 0 blue?")}
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

    from components.prompts.chat import IGNORE_INDEX, encode_conversation, render

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


def test_rows_with_a_list_of_answers_keep_every_reference(tmp_path):
    """Open-domain QA rows {"question", "answer", "answers": [...]}: every reference is kept (answer first) and
    an answers-only row learns its first answer; a non-list answers field is quarantined with its rule."""
    rows = [{"question": f"Who wrote book {i}?", "answer": f"Author {i}", "answers": [f"Author {i}", f"A. {i}", " "]}
            for i in range(12)]
    rows += [{"question": "Who painted it?", "answers": ["Monet", "Claude Monet"]},
             {"question": "Who sang it?", "answer": "Joni", "answers": "Joni Mitchell"}]
    f = tmp_path / "qa.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_validate(DataConfig(path=str(f)), ValidateConfig(), tmp_path / "out")
    kept = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert report["format"] == "qa" and report["rows_in"] == 14 == report["rows_kept"] + report["rows_quarantined"]
    assert kept[0]["answers"] == ["Author 0", "A. 0"] and kept[0]["answer"] == "Author 0"
    assert kept[12]["answer"] == "Monet" and kept[12]["answers"] == ["Monet", "Claude Monet"]
    q = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [(e["row"], e["rule"]) for e in q] == [(14, "answers_field")]
    # a named field: data.answers_field
    g = tmp_path / "named.jsonl"
    g.write_text("".join(json.dumps({"question": r["question"], "answer": r.get("answer", "x"), "aliases": [r.get("answer", "x"), "alt"]}) + "\n"
                         for r in rows[:12]))
    run_validate(DataConfig(path=str(g), answers_field="aliases"), ValidateConfig(), tmp_path / "named")
    assert json.loads((tmp_path / "named" / "train.jsonl").read_text().splitlines()[0])["answers"] == ["Author 0", "alt"]


def test_rows_without_ids_get_stable_ids_from_their_question(tmp_path):
    """Ids come from the normalised question, so adding or reordering rows never changes which id a question has."""
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(12)]

    def ids(rows, name):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        run_validate(DataConfig(path=str(f)), ValidateConfig(), tmp_path / name)
        return {r["question"]: r["id"] for r in map(json.loads, (tmp_path / name / "train.jsonl").read_text().splitlines())}

    before = ids(rows, "a")
    after = ids([{"question": "What is 100 plus 1?", "answer": "101"}] + rows[::-1], "b")
    assert len(set(before.values())) == 12 and all(after[q] == i for q, i in before.items())
    assert before["What is 3 plus 3?"] == question_id("what is 3 plus 3") == ids([{"question": "WHAT is 3 plus 3 ?", "answer": "6"}] + rows[:3] + rows[4:], "c")["WHAT is 3 plus 3 ?"]


def test_content_parts_are_joined_and_non_text_parts_quarantined_by_type(tmp_path):
    """OpenAI content parts ({"type": "text", "text"}) and LLaMA-Factory v1 ones ({"type": "text", "value"}) are
    joined in order with nothing between them; every such row is kept. A row with an image or audio part is
    quarantined with a reason that names the part's type."""
    def parts(*texts, key="text"):
        return [{"type": "text", key: t} for t in texts]

    rows = [{"messages": [{"role": "system", "content": parts("Be ", "brief.")},
                          {"role": "user", "content": parts(f"Question {i}", "?")},
                          {"role": "assistant", "content": parts(f"Answer {i}.", key="value" if i % 2 else "text")}]}
            for i in range(N)]
    report, kept, q = validate(tmp_path, jsonl(tmp_path / "parts.jsonl", rows))
    assert report["format"] == "sharegpt" and (report["rows_in"], report["rows_kept"], q) == (N, N, [])
    assert kept[3]["question"] == "Question 3?" and kept[3]["answer"] == "Answer 3."
    assert [m["content"] for m in kept[0]["messages"]] == ["Be brief.", "Question 0?", "Answer 0."]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    bad = [{"messages": [{"role": "user", "content": [*parts("What is in it?"), image]},
                         {"role": "assistant", "content": "A cat."}]},
           {"conversations": [{"from": "human", "value": [audio]}, {"from": "gpt", "value": "Hello."}]},
           {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}, {"role": "assistant", "content": "x"}]}]
    report, kept, q = validate(tmp_path, jsonl(tmp_path / "mixed.jsonl", rows + bad))
    assert (report["rows_in"], report["rows_kept"], report["rows_quarantined"]) == (N + 3, N, 3)
    assert [(x["row"], x["rule"]) for x in q] == [(N + 1, "content_parts"), (N + 2, "content_parts"), (N + 3, "messages")]
    assert "turn 1: content part 2 is of type 'image_url'" in q[0]["reason"] and "'input_audio'" in q[1]["reason"]
    assert "needs a string 'text'" in q[2]["reason"]


def test_template_vars_fill_placeholders_and_rows_left_with_one_are_quarantined(tmp_path):
    """data.template_vars fills {{name}} placeholders (LLaMA-Factory's identity set) in questions, answers, message
    contents and the system turn before validation; a row still holding a placeholder is quarantined naming it."""
    rows = [{"instruction": f"Who are you, question {i}?", "input": "",
             "output": f"I am {{{{name}}}}, an assistant made by {{{{ author }}}} ({i})."} for i in range(N)]
    rows.append({"messages": [{"role": "system", "content": "You are {{name}}."},
                              {"role": "user", "content": "Hello, what is your name?"},
                              {"role": "assistant", "content": "{{name}}."}]})
    f = jsonl(tmp_path / "identity.json", rows[:N])
    g = jsonl(tmp_path / "chat.jsonl", [rows[N]] * 1 + [
        {"messages": [{"role": "user", "content": f"Who built you, {i}?"}, {"role": "assistant", "content": "{{author}}"}]}
        for i in range(N)])
    names = {"name": "PeftBot", "author": "the peftpipe team"}
    report, kept, q = validate(tmp_path, f, template_vars=names)
    assert (report["rows_kept"], q) == (N, [])
    assert kept[2]["answer"] == "I am PeftBot, an assistant made by the peftpipe team (2)."
    report, kept, q = validate(tmp_path, g, template_vars=names)
    assert report["rows_kept"] == N + 1 and kept[0]["messages"][0]["content"] == "You are PeftBot."
    assert kept[0]["answer"] == "PeftBot." and kept[1]["answer"] == "the peftpipe team"
    report, kept, q = validate(tmp_path, g, template_vars={"author": "the peftpipe team"})
    assert report["rows_kept"] == N and [(x["row"], x["rule"]) for x in q] == [(1, "template_vars")]
    assert "unfilled placeholder {{name}}" in q[0]["reason"] and "data.template_vars.name" in q[0]["reason"]
    with pytest.raises(DataError, match=r"rule template_vars: unfilled placeholder \{\{name\}\}, \{\{author\}\}"):
        validate(tmp_path, f)  # nothing set: every row is quarantined, and the error says what to set


def test_tool_call_rows_are_left_out_with_one_message_for_the_file(tmp_path, capsys):
    """Conversations with tool calls (sharegpt function_call/observation turns with a tools column, OpenAI
    tool_calls/tool turns) cannot be rendered by the embedded model's template: they are left out with ONE message
    naming the file, how many rows and what to do, not quarantined row by row; the other rows are kept and
    rows in = kept + quarantined + left out."""
    tools = json.dumps([{"name": "weather", "parameters": {"type": "object", "properties": {}}}])
    plain = [{"conversations": [{"from": "human", "value": f"Question number {i}?"}, {"from": "gpt", "value": f"A{i}."}],
              "tools": tools} for i in range(N)]
    sharegpt_tools = [{"conversations": [{"from": "human", "value": f"Weather in town {i}?"},
                                         {"from": "function_call", "value": '{"name": "weather", "arguments": {}}'},
                                         {"from": "observation", "value": '{"temp": 20}'},
                                         {"from": "gpt", "value": "It is 20 degrees."}], "tools": tools} for i in range(7)]
    openai_tools = [{"messages": [{"role": "user", "content": f"Weather in city {i}?"},
                                  {"role": "assistant", "content": None, "tool_calls": [
                                      {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                                  {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 20}'},
                                  {"role": "assistant", "content": "It is 20 degrees."}]} for i in range(6)]
    rows = plain[:4] + sharegpt_tools + plain[4:] + openai_tools
    f = jsonl(tmp_path / "toolcall.jsonl", rows)
    report, kept, q = validate(tmp_path, f)
    assert (report["rows_in"], report["rows_kept"], report["rows_quarantined"], report["rows_left_out"]) == (N + 13, N, 0, 13)
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"] + report["rows_left_out"]
    assert [x["answer"] for x in kept] == [f"A{i}." for i in range(N)]
    [note] = report["left_out"]
    assert note["rule"] == "tool_calls" and note["rows"] == 13 and note["row_numbers"] == [*range(5, 12), *range(N + 8, N + 14)]
    assert note["reason"].startswith(f"{f}: 13 of {N + 13} rows carry tool calls")
    assert "with a tools column" in note["reason"] and "a model whose chat template renders tools" in note["reason"]
    assert capsys.readouterr().out.count("rows carry tool calls") == 1  # one message for the file, at validate time
    only_tools = jsonl(tmp_path / "only.jsonl", sharegpt_tools)
    with pytest.raises(DataError, match="7 of 7 rows carry tool calls"):
        validate(tmp_path, only_tools)


GLAIVE = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "llamafactory" / "glaive_toolcall_en_demo.json"


@pytest.mark.skipif(not GLAIVE.exists(), reason="../shared/datasets/llamafactory is not here")
def test_glaive_toolcall_demo_left_out_as_a_whole(tmp_path):
    """LLaMA-Factory's glaive_toolcall_en_demo: its 153 tool-call rows are one note, none is quarantined for its roles."""
    report = run_validate(DataConfig(path=str(GLAIVE)), ValidateConfig(max_quarantine_fraction=0.5), tmp_path / "out")
    assert (report["rows_in"], report["rows_left_out"]) == (300, 153)
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"] + report["rows_left_out"]
    assert not {"messages", "tool_calls"} & set(report["by_rule"])  # no row quarantined for its roles
