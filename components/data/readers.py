"""Readers for the QA formats the field uses, into one row shape.

Every reader yields (row number, row) where a row has `question` and `answer` (the last user turn and
the reply the model must learn and is scored on), optionally `answers` (all references), `messages`
(a whole conversation, for multi-turn training) and `id`. Unparseable input is quarantined by the
caller's Quarantine with file, row, rule and reason; whole-file problems raise DataError.

Formats: qa (JSONL, CSV or Parquet with named columns), alpaca (instruction/input/output, optional
system and history), sharegpt (conversations from/value, or OpenAI messages role/content; a content may be a
list of text parts, components.prompts.content), chatglm
(prompt/response/history columns, as ChatGLM's P-Tuning v2 scripts), squad (SQuAD v1 JSON), text (one
text field split by a regex with `question` and `answer` groups, e.g. Dolly's "### Human: ... ###
Assistant: ..." lines).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from components.config.params import DataConfig
from components.prompts.content import ContentError, content_text
from components.data.placeholders import fill_row, unfilled_reason
from components.data.records import (JSON_SUFFIXES, SURROGATE_REASON, DataError, file_bytes, has_surrogate, json_error,
                                     json_reason, raw_records)

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                "model": "assistant", "system": "system", "chatgpt": "assistant"}
FORMAT_COLUMNS = {"qa": ("question", "answer"), "chatglm": ("prompt", "response")}
# tool-call turns: sharegpt (LLaMA-Factory: function_call, observation) and OpenAI (tool, the older function)
TOOL_ROLES = frozenset({"function_call", "observation", "tool", "function"})


class RowError(ValueError):
    """One row cannot be used: (rule, reason)."""

    def __init__(self, rule: str, reason: str):
        super().__init__(reason)
        self.rule, self.reason = rule, reason


class ToolCallRow(RowError):
    """A conversation with tool calls: left out of the file as a whole (one message for the file), not quarantined."""

    def __init__(self):
        super().__init__("tool_calls", "the conversation has tool calls")


def tool_calls_note(path: Path, rows: list[int], n_in: int, tools_column: bool) -> str:
    """The one message for a file's tool-call rows: where, how many, and what to do."""
    return (f"{path}: {len(rows)} of {n_in} rows carry tool calls (function_call/observation or tool_calls/tool turns"
            f"{', with a tools column' if tools_column else ''}); they are left out, not quarantined (rule tool_calls): "
            "peftpipe trains text turns and does not render tool calls through a chat template (the embedded model's, "
            "ChatML, cannot render tools at all). To train tool use, take a model whose chat template renders tools "
            "(it takes `tools`, as Qwen2.5's and Llama 3.1's do) to a trainer that renders tool calls through it. The "
            f"{n_in - len(rows)} other rows are read as usual.")


def columns(cfg: DataConfig, fmt: str) -> tuple[str, str]:
    """The question and answer column names: configured, else the format's defaults."""
    q, a = FORMAT_COLUMNS.get(fmt, ("question", "answer"))
    return cfg.question_field or q, cfg.answer_field or a


def detect_keys(keys: set[str]) -> str | None:
    if "conversations" in keys or "messages" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"prompt", "response"} <= keys:
        return "chatglm"
    if {"question", "answer"} <= keys or {"question", "answers"} <= keys:
        return "qa"
    if keys == {"text"} or (keys and keys <= {"text", "id", "category", "source"}):
        return "text"
    return None


def detect_format(path: Path) -> str:
    """The format of a data file, from its extension and its first rows (the most common row format).

    A file without one JSON object among them is a DataError that says why: the document does not parse,
    the rows are not objects, or the file is not JSON at all.
    """
    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        return "qa"
    data = file_bytes(path)
    head = data[:200_000].lstrip()
    doc, doc_error = None, None
    if head[:1] in (b"{", b"["):
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # JSON lines, or a broken document
            doc_error = e
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return "squad"
    sample: list[tuple[int, object]] = []  # (row, value)
    line_error = None
    if isinstance(doc, (dict, list)):
        sample = list(enumerate(doc[:20] if isinstance(doc, list) else [doc], start=1))
    else:
        for i, line in enumerate(head.split(b"\n")[:20], start=1):
            try:
                sample.append((i, json.loads(line)))
            except (ValueError, RecursionError) as e:
                if line.strip() and line_error is None:
                    line_error = (i, e)
    objects = [set(obj) for _, obj in sample if isinstance(obj, dict)]
    keys = set().union(*objects)
    found = Counter(f for f in map(detect_keys, objects) if f).most_common(1)
    found = found[0][0] if found else detect_keys(keys)
    if found:
        return found
    if objects:
        raise DataError(f"{path}: row 1: rule format: cannot tell the format from keys {sorted(keys)}; set data.format")
    if doc_error is not None and getattr(doc_error, "msg", "") != "Extra data":
        raise json_error(path, doc_error, data)
    if sample:
        row, value = sample[0]
        raise DataError(f"{path}: row {row}: rule json: expected an object, got {type(value).__name__}")
    if line_error and path.suffix.lower() not in JSON_SUFFIXES:
        raise DataError(f"{path}: row 1: rule file_type: unknown extension {path.suffix!r} and not JSON lines; "
                        "use .jsonl, .json, .csv, .tsv or .parquet")
    if line_error:
        row, e = line_error
        raise DataError(f"{path}: row {row}: rule json: not valid JSON: {getattr(e, 'msg', None) or json_reason(e)}")
    raise DataError(f"{path}: file has no rows (rule: non_empty_file)")


def resolve_format(path: Path, cfg: DataConfig) -> str:
    """data.format, checked against what the file looks like (auto: what it looks like)."""
    if cfg.format == "auto":
        return detect_format(path)
    try:
        detected = detect_format(path)
    except DataError as e:
        if "cannot tell the format" not in str(e):
            raise
        return cfg.format  # nothing to contradict the declared format; its reader reports what is missing
    compatible = {cfg.format, "qa"} if cfg.format in ("chatglm", "text") else {cfg.format}
    if cfg.format == "qa" and (cfg.question_field or cfg.answer_field):
        return "qa"  # named columns: any JSON rows will do
    if detected not in compatible:
        raise DataError(f"{path}: rule format: data.format is {cfg.format!r} but the file looks like {detected!r}; "
                        f"fix data.format (or set it to auto)")
    return cfg.format


def _text(obj: dict, key: str, rule: str = "required_fields") -> str:
    value = obj.get(key)
    if value is None:
        raise RowError(rule, f"missing or null field: {key}")
    if not isinstance(value, str):
        raise RowError("string_fields", f"field not a string: {key}")
    return value


def _conversation(turns: list, fields: tuple[str, str]) -> list[dict]:
    role_key, text_key = fields
    out = []
    if any(isinstance(t, dict) and (str(t.get(role_key, "")).lower() in TOOL_ROLES or t.get("tool_calls")
                                    or t.get("function_call")) for t in turns):
        raise ToolCallRow()
    for n, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get(text_key), (str, list)):
            raise RowError("messages", f"turn {n + 1}: needs {role_key!r} and a string {text_key!r} (or a list of "
                                       "text parts)")
        role = ROLE_ALIASES.get(str(t.get(role_key, "")).lower())
        if role is None:
            raise RowError("messages", f"turn {n + 1}: unknown role {t.get(role_key)!r}")
        try:
            text = content_text(t[text_key])
        except ContentError as e:
            rule = "content_parts" if e.part_type else "messages"
            raise RowError(rule, f"turn {n + 1}: {e.reason}") from None
        out.append({"role": role, "content": text})
    return out


def conversation_row(messages: list[dict]) -> dict:
    """question/answer from a conversation: the last user turn and the final assistant reply."""
    body = [m for m in messages if m["role"] != "system"]
    if any(m["role"] == "system" for m in messages[1:]):
        raise RowError("messages", "a system turn may only come first")
    if len(body) < 2 or body[-1]["role"] != "assistant":
        raise RowError("messages", "the conversation must end with an assistant reply after a user turn")
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise RowError("messages", f"turn {i + 1}: expected a {want} turn, got {m['role']}")
    return {"question": body[-2]["content"], "answer": body[-1]["content"], "messages": messages}


def history_messages(history, where: str) -> list[dict]:
    """[[q, a], ...] (ChatGLM and Alpaca history) into user/assistant turns."""
    if history in (None, ""):
        return []
    if not isinstance(history, list) or not all(isinstance(h, (list, tuple)) and len(h) == 2 for h in history):
        raise RowError("history", f"{where} must be a list of [question, answer] pairs")
    out = []
    for q, a in history:
        if not isinstance(q, str) or not isinstance(a, str):
            raise RowError("history", f"{where} holds a non-string turn")
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


def reference_list(obj: dict, key: str, required: bool) -> list[str]:
    """The row's list of reference answers under `key` (open-domain QA sets: `answers`), stripped, deduplicated."""
    value = obj.get(key)
    if value is None:
        if required:
            raise RowError("required_fields", f"missing or null field: {key} (data.answers_field)")
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise RowError("answers_field", f"field {key} must be a list of strings")
    refs = list(dict.fromkeys(x.strip() for x in value if x.strip()))
    if not refs and required:
        raise RowError("answers_field", f"field {key} holds no non-empty answer")
    return refs


def to_row(obj: dict, fmt: str, cfg: DataConfig) -> dict:
    """One raw record in `fmt` as a row; raises RowError for a record that cannot be used."""
    if fmt == "qa" or (fmt == "chatglm" and cfg.history_field not in obj):
        q, a = columns(cfg, fmt)
        refs = reference_list(obj, cfg.answers_field or "answers", required=cfg.answers_field is not None)
        if refs and obj.get(a) is None:  # only a list of answers: the first is the one to learn
            return {"question": _text(obj, q), "answer": refs[0], "answers": refs}
        row = {"question": _text(obj, q), "answer": _text(obj, a)}
        if refs:
            row["answers"] = list(dict.fromkeys([row["answer"].strip(), *refs]))  # every reference, the answer first
        return row
    if fmt == "chatglm":
        q, a = columns(cfg, fmt)
        messages = history_messages(obj.get(cfg.history_field), cfg.history_field)
        messages += [{"role": "user", "content": _text(obj, q)}, {"role": "assistant", "content": _text(obj, a)}]
        return conversation_row(messages)
    if fmt == "alpaca":
        instruction, extra = _text(obj, "instruction"), obj.get("input") or ""
        if not isinstance(extra, str):
            raise RowError("string_fields", "field not a string: input")
        question = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "system", "content": obj["system"]}] if isinstance(obj.get("system"), str) and obj["system"] else []
        messages += history_messages(obj.get("history"), "history")
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": _text(obj, "output")}]
        return conversation_row(messages) if len(messages) > 2 else {"question": question, "answer": messages[-1]["content"]}
    if fmt == "sharegpt":
        if isinstance(obj.get("messages"), list):
            messages = _conversation(obj["messages"], ("role", "content"))
        elif isinstance(obj.get("conversations"), list):
            messages = _conversation(obj["conversations"], ("from", "value"))
        else:
            raise RowError("required_fields", "missing 'conversations' or 'messages' list")
        if isinstance(obj.get("system"), str) and obj["system"] and messages[:1] and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": obj["system"]}] + messages
        return conversation_row(messages)
    if fmt == "text":
        text = _text(obj, cfg.text_field)
        m = re.match(cfg.text_pattern, text, flags=re.DOTALL)
        if not m:
            raise RowError("text_pattern", "text does not match data.text_pattern")
        return {"question": m.group("question"), "answer": m.group("answer")}
    raise ValueError(f"unknown format {fmt!r}")


def squad_rows(path: Path, cfg: DataConfig, quarantine) -> Iterator[tuple[int, dict]]:
    """SQuAD v1 JSON (data > paragraphs > qas): one row per question, numbered from 1 in file order.

    The question is `data.context_template` filled with the context and the question; the first answer
    is the reference and all answers are kept under `answers`.
    """
    data = file_bytes(path)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise json_error(path, e, data) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: row 1: rule squad_structure: expected an object with a 'data' list")
    row = 0

    def listed(obj, key: str, where: str) -> list:
        if not isinstance(obj, dict):
            raise DataError(f"{path}: row {row + 1}: rule squad_structure: {where} must be an object")
        if not isinstance(obj.get(key, []), list):
            raise DataError(f"{path}: row {row + 1}: rule squad_structure: {where}.{key} must be a list")
        return obj.get(key, [])

    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(listed(article, "paragraphs", f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            qas = listed(para, "qas", where)
            context = para.get("context")
            for qa in qas:
                row += 1
                answers = qa.get("answers") if isinstance(qa, dict) else None
                answers = [x.get("text") for x in answers if isinstance(x, dict)] if isinstance(answers, list) else []
                answers = list(dict.fromkeys(x.strip() for x in answers if isinstance(x, str) and x.strip()))
                if not isinstance(context, str) or not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not answers:
                    quarantine.add(str(path), row, "required_fields", f"{where}: needs a context, a question and an answer",
                                   qa if isinstance(qa, dict) else None)
                    continue
                if has_surrogate([context, qa]):
                    quarantine.add(str(path), row, "encoding", f"{where}: {SURROGATE_REASON}", qa)
                    continue
                yield row, {"id": str(qa.get("id", row)), "answers": answers, "answer": answers[0],
                            "question": cfg.context_template.format(context=context.strip(), question=qa["question"].strip())}


def read_file(path: Path, cfg: DataConfig, quarantine) -> tuple[str, list[tuple[int, dict]], int]:
    """(format, [(row number, row)], rows in) for a data file; bad rows go to `quarantine`, and conversations with
    tool calls are left out with one message for the file (`quarantine.leave_out`)."""
    fmt = resolve_format(path, cfg)
    before = len(quarantine.entries)
    if fmt == "squad":
        rows = []
        for i, row in squad_rows(path, cfg, quarantine):
            unfilled = fill_row(row, cfg.template_vars)
            if unfilled:
                quarantine.add(str(path), i, "template_vars", unfilled_reason(unfilled), {"question": row["question"]})
            else:
                rows.append((i, row))
        return fmt, rows, len(rows) + len(quarantine.entries) - before
    rows, keys, tool_rows, tools_column = [], set(), [], False
    for i, obj in raw_records(path, quarantine):
        keys |= set(obj)
        try:
            if has_surrogate(obj):
                raise RowError("encoding", SURROGATE_REASON)
            row = to_row(obj, fmt, cfg)
            unfilled = fill_row(row, cfg.template_vars)
            if unfilled:
                raise RowError("template_vars", unfilled_reason(unfilled))
        except ToolCallRow:
            tool_rows.append(i)
            tools_column = tools_column or bool(obj.get("tools"))
            continue
        except RowError as e:
            other = detect_keys(set(obj)) if e.rule == "required_fields" else None
            if other and other != fmt:  # e.g. an alpaca row in a qa file
                e = RowError("mixed_format", f"row looks like {other}, the file is {fmt}")
            quarantine.add(str(path), i, e.rule, e.reason, obj)
            continue
        if "id" in obj and obj["id"] not in (None, ""):
            row["id"] = str(obj["id"])
        row["_raw"] = obj
        rows.append((i, row))
    n_in = len(rows) + len(quarantine.entries) - before + len(tool_rows)
    if tool_rows:
        quarantine.leave_out(str(path), tool_rows, "tool_calls", tool_calls_note(path, tool_rows, n_in, tools_column))
    if n_in and not rows and fmt in ("qa", "chatglm"):
        q, a = columns(cfg, fmt)
        if not {q, a} & keys:
            raise DataError(f"{path}: row 1: rule required_fields: no row has the fields {q!r} and {a!r} "
                            f"(found: {', '.join(sorted(keys)) or 'none'}); set data.question_field/answer_field")
    return fmt, rows, n_in
