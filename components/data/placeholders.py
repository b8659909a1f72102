"""`{{name}}` placeholders in rows (LLaMA-Factory's identity set writes {{name}} and {{author}}), filled from
data.template_vars before validation; a row that still holds one afterwards is quarantined naming it, so a model
never learns to say "I am {{name}}"."""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def fill(text: str, values: dict[str, str]) -> str:
    """text with each {{name}} that `values` holds replaced (one pass: a value is not filled in turn)."""
    return PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), text)


def fill_row(row: dict, values: dict[str, str]) -> list[str]:
    """Fill the row's texts in place (question, answer, answers, every message's content, the system turn among
    them); return the names of the placeholders left unfilled, in order of first appearance."""
    if values:
        for key in ("question", "answer"):
            row[key] = fill(row[key], values)
        if row.get("answers"):
            row["answers"] = [fill(a, values) for a in row["answers"]]
        for m in row.get("messages") or []:
            m["content"] = fill(m["content"], values)
    texts = [row["question"], row["answer"], *(row.get("answers") or []),
             *(m["content"] for m in row.get("messages") or [])]
    return list(dict.fromkeys(m[1] for t in texts for m in PLACEHOLDER.finditer(t)))


def unfilled_reason(names: list[str]) -> str:
    shown = ", ".join("{{" + n + "}}" for n in names)
    return (f"unfilled placeholder {shown}: set " + " ".join(f"data.template_vars.{n}" for n in names)
            + " (e.g. -S data.template_vars." + names[0] + "=...)")
