"""(Re)write the bad-input corpus byte-exactly: `python tests/unit/data/bad_inputs/make_corpus.py`.

One small file per case, named NN_short_name.ext; what each case must produce is in cases.yaml.
The files are committed: the suite reads the real bytes (encodings, BOMs, NUL bytes, truncation).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES: dict[str, bytes] = {}


def good(n: int = 30, start: int = 0) -> list[dict]:
    return [{"question": f"What is fact number {i} about the river?", "answer": f"Fact {i} is that it flows."}
            for i in range(start, start + n)]


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def jsonl(rows: list) -> bytes:
    """Rows: dicts/lists/str are JSON-encoded, bytes are written as they are (plus a newline)."""
    return b"".join(r + b"\n" if isinstance(r, bytes) else line(r) for r in rows)


def case(name: str, data: bytes | str) -> None:
    FILES[name] = data.encode("utf-8") if isinstance(data, str) else data


G = good()
case("01_empty_file.jsonl", b"")
case("02_blank_lines_only.jsonl", b"\n   \n\t\r\n\n")
case("03_broken_json_lines.jsonl", jsonl(G[:10] + [b'{"question": "Missing a brace?", "answer": "yes"',
                                                   b"{'question': 'Python dict?', 'answer': 'no'}",
                                                   b'{question: "Unquoted key?", "answer": "no"}'] + G[10:]))
case("04_mostly_broken_json.jsonl", jsonl([x for r in good(10) for x in (r, b'{"question": ')]))
case("05_latin1_rows.jsonl", jsonl(G + ['{"question": "Is the caf\xe9 open?", "answer": "Oui."}'.encode("latin-1"),
                                        '{"question": "Na\xefve question?", "answer": "Yes."}'.encode("latin-1"),
                                        '{"question": "Price in \xa3?", "answer": "Ten."}'.encode("latin-1")]))
case("06_latin1_csv.csv", ("question,answer\n" + "".join(f'"{r["question"]}","{r["answer"]}"\n' for r in G[:12])
                           + "Is the caf\xe9 open?,Oui\n").encode("latin-1"))
case("07_utf16_bom.jsonl", "".join(json.dumps(r) + "\n" for r in G).encode("utf-16"))
case("08_utf16_no_bom.jsonl", "".join(json.dumps(r) + "\n" for r in G).encode("utf-16-le"))
case("09_utf8_bom.jsonl", b"\xef\xbb\xbf" + jsonl(G))
case("10_bom_mid_file.jsonl", jsonl(G[:15]) + b"\xef\xbb\xbf" + jsonl(G[15:]))
case("11_renamed_fields.jsonl", jsonl([{"q": r["question"], "a": r["answer"]} for r in G]))
case("12_missing_fields_some_rows.jsonl", jsonl(G + [{"question": "Where is the answer?"},
                                                     {"question": "Typo in the key?", "anwser": "yes"},
                                                     {"answer": "An answer without a question."}]))
case("13_declared_fields_absent.jsonl", jsonl(G))
case("14_null_values.jsonl", jsonl(G + [{"question": None, "answer": "Null question."},
                                        {"question": "Null answer?", "answer": None}]))
case("15_non_string_values.jsonl", jsonl(G + [{"question": "An integer answer?", "answer": 42},
                                              {"question": "A float answer?", "answer": 3.5},
                                              {"question": "A boolean answer?", "answer": True},
                                              {"question": "A list answer?", "answer": ["a", "b"]},
                                              {"question": "A dict answer?", "answer": {"text": "x"}},
                                              {"question": 7, "answer": "A number question."},
                                              b'{"question": "A NaN answer?", "answer": NaN}']))
case("16_empty_whitespace_answers.jsonl", jsonl(G + [{"question": "Empty answer?", "answer": ""},
                                                     {"question": "Spaces answer?", "answer": "    "},
                                                     {"question": "Tab and newline answer?", "answer": "\t\n"},
                                                     {"question": "", "answer": "Empty question."},
                                                     {"question": " \u3000 ", "answer": "Ideographic space question."}]))
case("17_huge_rows.jsonl", jsonl(G + [{"question": "Why " + "very " * 600 + "long?", "answer": "Because."},
                                      {"question": "A very long answer?", "answer": "word " * 900},
                                      {"question": "Hi", "answer": "Question too short."}]))
case("18_control_chars.jsonl", jsonl(G + [{"question": "A bell \x07 inside?", "answer": "yes"},
                                          {"question": "Colour codes?", "answer": "\x1b[31mred\x1b[0m"},
                                          {"question": "A NUL \x00 inside?", "answer": "yes"},
                                          {"question": "A DEL char?", "answer": "yes\x7f"}]))
case("19_crlf_and_tabs.jsonl", b"".join(line(r)[:-1] + b"\r\n" for r in G[:29])
     + line({"question": "Tabs\tinside the question?", "answer": "Yes,\tand a\nnewline."})[:-1] + b"\r\n")
case("20_duplicates.jsonl", jsonl(G + [G[3], {"question": "  WHAT is fact number 7 about the river!! ",
                                              "answer": "Fact 7 is that it flows."}]))
case("21_conflicting_pairs.jsonl", jsonl(G + [{"question": G[4]["question"], "answer": "It does not flow."},
                                              {"question": "what is fact number 9 about the river", "answer": "Unknown."}]))
case("22_leakage_train.jsonl", jsonl(G))
case("22_leakage_test.jsonl", jsonl([{"question": f"Held-out question {i}?", "answer": f"Held {i}."} for i in range(12)]
                                    + [G[1], {"question": "What is FACT number 2 about the river", "answer": "x"},
                                       {"question": G[5]["question"], "answer": "A different answer."}]))
case("23_test_is_train.jsonl", jsonl(G))
case("24_mixed_qa_alpaca.jsonl", jsonl(G[:5] + [{"instruction": "Name a river.", "output": "The Nile."},
                                                {"instruction": "Translate.", "input": "bonjour", "output": "hello"}]
                                       + G[5:] + [{"instruction": "Name a lake.", "output": "Baikal."}]))
case("25_mixed_qa_sharegpt.jsonl", jsonl(G[:3] + [{"conversations": [{"from": "human", "value": "Hi there?"},
                                                                     {"from": "gpt", "value": "Hello."}]}]
                                         + G[3:] + [{"messages": [{"role": "user", "content": "Bye now?"},
                                                                  {"role": "assistant", "content": "Bye."}]}]))
case("26_data_dir/part-00000.jsonl", jsonl(G))
case("31_truncated_last_line.jsonl", jsonl(G) + line({"question": "Cut off?", "answer": "This row was cut"})[:30])
case("32_trailing_garbage.jsonl", jsonl(G[:29]) + line(G[29])[:-1] + b" trailing words\n" + b"EOF\n"
     + b"\x00\x00\x00\x00\x00\x00\n")
case("33_csv_wrong_columns.csv", "q,a\n" + "".join(f'"{r["question"]}","{r["answer"]}"\n' for r in G))
case("34_csv_ragged.csv", "question,answer\n" + "".join(f'"{r["question"]}","{r["answer"]}"\n' for r in G[:12])
     + "Too many fields?,yes,and more\n" + "".join(f'"{r["question"]}","{r["answer"]}"\n' for r in G[12:]))
case("35_csv_missing_cells.csv", "question,answer\n" + "".join(f'"{r["question"]}","{r["answer"]}"\n' for r in G)
     + "Missing the answer cell?\n" + "An empty answer cell?,\n" + ',"An answer with an empty question."\n')
case("36_csv_semicolon.csv", "question;answer\n" + "".join(f'{r["question"]};{r["answer"]}\n' for r in G))
case("37_csv_header_only.csv", "question,answer\n")
case("38_unknown_ext_binary.xlsx", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00b\xee\x9dh^\x01\x00\x00\x90\x04"
     b"\x00\x00\x13\x00\x08\x02[Content_Types].xml \xa2\x04\x02(\xa0\x00\x02\x00\x00\x00\x00\x00")
case("39_unknown_ext_jsonl.txt", jsonl(G))
case("40_json_array_non_objects.json", json.dumps(G[:15] + [1, "a string", None, ["a", "list"]] + G[15:], indent=1))
case("41_json_array_only_scalars.json", json.dumps([1, 2, 3, "four"]))
case("42_json_array_truncated.json", json.dumps(G, indent=1)[:700])
case("43_json_object_wrapper.json", json.dumps({"rows": G}, indent=2))
SQUAD_QAS = [{"id": f"q{i}", "question": f"Which fact is number {i}?", "answers": [{"text": f"Fact {i}", "answer_start": 0}]}
             for i in range(30)]


def squad(qas: list, paragraphs=None) -> dict:
    paras = paragraphs if paragraphs is not None else [{"context": "A river flows to the sea.", "qas": qas}]
    return {"version": "1.1", "data": [{"title": "River", "paragraphs": paras}]}


case("44_squad_truncated.json", json.dumps(squad(SQUAD_QAS), indent=1)[:900])
case("45_squad_truncated_declared.json", json.dumps(squad(SQUAD_QAS), indent=1)[:900])
case("46_squad_bad_answers.json", json.dumps(squad(SQUAD_QAS + [
    {"id": "no-answers", "question": "Where are the answers?", "answers": []},
    {"id": "int-answers", "question": "Answers as a number?", "answers": 5},
    {"id": "str-answers", "question": "Answers as a string?", "answers": "the sea"},
    {"id": "no-question", "answers": [{"text": "x", "answer_start": 0}]},
]), indent=1))
case("47_squad_paragraphs_not_list.json", json.dumps(squad([], paragraphs={"context": "A river.", "qas": SQUAD_QAS}), indent=1))
case("48_zero_width_and_punctuation_questions.jsonl", jsonl(G + [{"question": "\u200b\u200b\u200b\u200b", "answer": "Zero-width."},
                                                                {"question": "???", "answer": "Only punctuation."},
                                                                {"question": "\u200b?!\u200b.", "answer": "Both."},
                                                                {"question": "\u2060\ufeff\u200d", "answer": "Joiners."}]))
case("49_replacement_chars.jsonl", jsonl(G + [{"question": "Caf\ufffd open?", "answer": "yes"},
                                              {"question": "Mis-decoded answer?", "answer": "na\ufffd\ufffdve"}]))
case("50_lone_surrogates.jsonl", jsonl(G + [b'{"question": "A lone \\ud800 surrogate?", "answer": "yes"}',
                                            b'{"question": "A lone low surrogate?", "answer": "x\\udfff"}']))
case("51_deep_nesting.jsonl", jsonl(G[:5] + [b'{"question": "Deep?", "answer": ' + b"[" * 5000 + b"]" * 5000 + b"}"] + G[5:]))
case("52_huge_integer.jsonl", jsonl(G + [b'{"question": "A huge number?", "answer": ' + b"9" * 5000 + b"}"]))
case("53_too_few_rows.jsonl", jsonl(G[:5]))
ALPACA = [{"instruction": f"Name river fact {i}.", "input": "", "output": f"Fact {i}."} for i in range(30)]
case("54_alpaca_bad_rows.jsonl", jsonl(ALPACA + [{"instruction": "Input as a list.", "input": ["a"], "output": "x"},
                                                 {"instruction": "Broken history.", "output": "x", "history": [["only one"]]},
                                                 {"instruction": "No output here."}]))
DOLLY = [{"text": f"### Human: Why is river {i} wet? ### Assistant: Because of water {i}."} for i in range(30)]
case("55_text_pattern_mismatch.jsonl", jsonl(DOLLY + [{"text": "no markers at all"},
                                                      {"text": "### Human: only a question"}]))
SHAREGPT = [{"conversations": [{"from": "human", "value": f"River question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]}
            for i in range(30)]
case("56_sharegpt_bad_turns.jsonl", jsonl(SHAREGPT + [
    {"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]},
    {"conversations": [{"from": "human", "value": "Unanswered?"}]},
    {"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "y"}]},
]))
case("57_parquet_corrupt.parquet", b"PAR1 this is not really a parquet file\n")
case("59_json_scalar.json", b'"just a string"\n')
case("60_jsonl_of_arrays.jsonl", jsonl([[r["question"], r["answer"]] for r in G]))
case("61_format_mismatch_declared.jsonl", jsonl(ALPACA))
case("62_quarantine_over_limit.jsonl", jsonl(G[:20] + [{"question": f"Blank answer {i}?", "answer": " "} for i in range(8)]))


def parquet_case() -> None:
    """58: a Parquet file with null and numeric answers (pyarrow writes it; the bytes carry its version)."""
    import pandas as pd

    answers = [r["answer"] for r in G] + [None, None, None]
    df = pd.DataFrame({"question": [r["question"] for r in G] + ["Null answer A?", "Null answer B?", "Null answer C?"],
                       "answer": answers})
    df.to_parquet(HERE / "58_parquet_null_answers.parquet", index=False)


def main() -> None:
    for name, data in FILES.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    parquet_case()
    print(f"wrote {len(FILES) + 1} files to {HERE}")


if __name__ == "__main__":
    shutil.rmtree(HERE / "26_data_dir", ignore_errors=True)
    main()
