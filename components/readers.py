"""Readers for the QA formats the field uses, into one row shape.

Every reader yields (row number, row) where a row has `question` and `answer` (the last user turn and
the reply the model must learn and is scored on), optionally `answers` (all references), `messages`
(a whole conversation, for multi-turn training) and `id`. Unparseable input is quarantined by the
caller's Quarantine with file, row, rule and reason; whole-file problems raise DataError.

Formats: qa (JSONL, CSV or Parquet with named columns), alpaca (instruction/input/output, optional
system and history), sharegpt (conversations from/value, or OpenAI messages role/content), chatglm
(prompt/response/history columns, as ChatGLM's P-Tuning v2 scripts), squad (SQuAD v1 JSON), text (one
text field split by a regex with `question` and `answer` groups, e.g. Dolly's "### Human: ... ###
Assistant: ..." lines).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from peftpipe.config import DataConfig

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                "model": "assistant", "system": "system", "chatgpt": "assistant"}
FORMAT_COLUMNS = {"qa": ("question", "answer"), "chatglm": ("prompt", "response")}


class DataError(ValueError):
    """A hard data failure: the pipeline stops. The message names file, row and rule."""


class RowError(ValueError):
    """One row cannot be used: (rule, reason)."""

    def __init__(self, rule: str, reason: str):
        super().__init__(reason)
        self.rule, self.reason = rule, reason


def columns(cfg: DataConfig, fmt: str) -> tuple[str, str]:
    """The question and answer column names: configured, else the format's defaults."""
    q, a = FORMAT_COLUMNS.get(fmt, ("question", "answer"))
    return cfg.question_field or q, cfg.answer_field or a


def file_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise DataError(f"{path}: file is empty (rule: non_empty_file)")
    return data


def raw_records(path: Path, quarantine) -> Iterator[tuple[int, dict]]:
    """(row number, object) from JSONL, a JSON array, CSV or Parquet; broken JSON lines are quarantined."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import pandas as pd

        file_bytes(path)
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",",
                             encoding="utf-8-sig")
        except (UnicodeDecodeError, pd.errors.ParserError) as e:
            raise DataError(f"{path}: not a readable CSV file: {e}") from None
        yield from ((i, r) for i, r in enumerate(df.to_dict("records"), start=1))
        return
    if suffix == ".parquet":
        import pandas as pd

        file_bytes(path)
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: not a readable Parquet file: {e}") from None
        yield from ((i, r) for i, r in enumerate(df.to_dict("records"), start=1))
        return
    data = file_bytes(path)
    if data.lstrip()[:1] == b"[":  # a JSON array of rows
        try:
            rows = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not valid JSON: {e}") from None
        for i, obj in enumerate(rows, start=1):
            if isinstance(obj, dict):
                yield i, obj
            else:
                quarantine.add(str(path), i, "json", f"expected an object, got {type(obj).__name__}", obj)
        return
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue  # blank lines are not rows
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            quarantine.add(str(path), i, "encoding", f"not valid UTF-8 at byte {e.start}", raw.decode("utf-8", "replace"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            quarantine.add(str(path), i, "json", f"not valid JSON: {e.msg} at column {e.colno}", line)
            continue
        if not isinstance(obj, dict):
            quarantine.add(str(path), i, "json", f"expected an object, got {type(obj).__name__}", line)
            continue
        yield i, obj


def detect_keys(keys: set[str]) -> str | None:
    if "conversations" in keys or "messages" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"prompt", "response"} <= keys:
        return "chatglm"
    if {"question", "answer"} <= keys:
        return "qa"
    if keys == {"text"} or (keys and keys <= {"text", "id", "category", "source"}):
        return "text"
    return None


def detect_format(path: Path) -> str:
    """The format of a data file, from its extension and the keys of its first rows."""
    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        return "qa"
    head = file_bytes(path)[:200_000].lstrip()
    if head[:1] == b"{":
        try:
            doc = json.loads(file_bytes(path).decode("utf-8"))
            if isinstance(doc, dict) and isinstance(doc.get("data"), list):
                return "squad"
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # JSON lines, not one document
    keys: set[str] = set()
    if head[:1] == b"[":
        try:
            sample = json.loads(file_bytes(path).decode("utf-8"))[:20]
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
            sample = []
    else:
        sample = []
        for line in head.split(b"\n")[:20]:
            try:
                sample.append(json.loads(line))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
    for obj in sample:
        if isinstance(obj, dict):
            keys |= set(obj)
    found = detect_keys(keys)
    if found is None:
        raise DataError(f"{path}: row 1: rule format: cannot tell the format from keys {sorted(keys)}; set data.format")
    return found


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
        raise DataError(f"{path}: data.format is {cfg.format!r} but the file looks like {detected!r}; "
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
    for n, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get(text_key), str):
            raise RowError("messages", f"turn {n + 1}: needs {role_key!r} and a string {text_key!r}")
        role = ROLE_ALIASES.get(str(t.get(role_key, "")).lower())
        if role is None:
            raise RowError("messages", f"turn {n + 1}: unknown role {t.get(role_key)!r}")
        out.append({"role": role, "content": t[text_key]})
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


def to_row(obj: dict, fmt: str, cfg: DataConfig) -> dict:
    """One raw record in `fmt` as a row; raises RowError for a record that cannot be used."""
    if fmt == "qa" or (fmt == "chatglm" and cfg.history_field not in obj):
        q, a = columns(cfg, fmt)
        return {"question": _text(obj, q), "answer": _text(obj, a)}
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
    try:
        doc = json.loads(file_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a SQuAD JSON file: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: row 1: rule squad_structure: expected an object with a 'data' list")
    row = 0
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = para.get("context") if isinstance(para, dict) else None
            for qa in para.get("qas", []) if isinstance(para, dict) else []:
                row += 1
                where = f"data[{a}].paragraphs[{p}]"
                answers = [x.get("text") for x in qa.get("answers", []) if isinstance(x, dict)] if isinstance(qa, dict) else []
                answers = list(dict.fromkeys(x.strip() for x in answers if isinstance(x, str) and x.strip()))
                if not isinstance(context, str) or not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not answers:
                    quarantine.add(str(path), row, "required_fields", f"{where}: needs a context, a question and an answer",
                                   qa if isinstance(qa, dict) else None)
                    continue
                yield row, {"id": str(qa.get("id", row)), "answers": answers, "answer": answers[0],
                            "question": cfg.context_template.format(context=context.strip(), question=qa["question"].strip())}


def read_file(path: Path, cfg: DataConfig, quarantine) -> tuple[str, list[tuple[int, dict]], int]:
    """(format, [(row number, row)], rows in) for a data file; bad rows go to `quarantine`."""
    fmt = resolve_format(path, cfg)
    before = len(quarantine.entries)
    if fmt == "squad":
        rows = list(squad_rows(path, cfg, quarantine))
        return fmt, rows, len(rows) + len(quarantine.entries) - before
    rows, keys = [], set()
    for i, obj in raw_records(path, quarantine):
        keys |= set(obj)
        try:
            row = to_row(obj, fmt, cfg)
        except RowError as e:
            quarantine.add(str(path), i, e.rule, e.reason, obj)
            continue
        if "id" in obj and obj["id"] not in (None, ""):
            row["id"] = str(obj["id"])
        row["_raw"] = obj
        rows.append((i, row))
    n_in = len(rows) + len(quarantine.entries) - before
    if n_in and not rows and fmt in ("qa", "chatglm"):
        q, a = columns(cfg, fmt)
        if not {q, a} & keys:
            raise DataError(f"{path}: row 1: rule required_fields: no row has the fields {q!r} and {a!r} "
                            f"(found: {', '.join(sorted(keys)) or 'none'}); set data.question_field/answer_field")
    return fmt, rows, n_in
