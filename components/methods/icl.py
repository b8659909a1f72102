"""In-context learning: no training; k worked examples from the train split go before each question.

The examples are drawn once, deterministically (seeded), from training rows no longer than
`max_shot_tokens`, and saved as `icl.json`; evaluation, export and `peftpipe generate` put them
into every prompt as earlier chat turns.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from components.core.layout import ICL_FILE
from components.methods.base import Context, MethodConfig

FAMILY = "baseline"
ROUTE = "icl"  # no weights change: the examples ship
SAVE = "none"


class Config(MethodConfig):
    shots: int = Field(3, ge=0)
    max_shot_tokens: int = Field(96, ge=8, description="only training rows this short become examples")


def apply(model, c: Config, ctx: Context):
    return model


def draw_shots(rows: list[dict], c: Config, seed: int) -> list[list[dict]]:
    """k conversations from the train rows, the same for the same seed and data."""
    import numpy as np

    short = [r for r in rows if r["length"] <= c.max_shot_tokens] or rows
    order = np.random.default_rng(seed).permutation(len(short))[: c.shots]
    return [[{"role": m["role"], "content": m["content"]} for m in short[i]["messages"]] for i in order]


def write(folder: Path, rows: list[dict], c: Config, seed: int) -> dict:
    shots = draw_shots(rows, c, seed)
    (folder / ICL_FILE).write_text(json.dumps({"shots": shots}, ensure_ascii=False, indent=1), encoding="utf-8")
    return {"shots": len(shots)}


def read_shots(folder: str | Path) -> list[list[dict]] | None:
    """The saved examples, or None when the folder holds no ICL method."""
    f = Path(folder) / ICL_FILE
    return json.loads(f.read_text(encoding="utf-8"))["shots"] if f.exists() else None


def with_shots(messages: list[dict], shots: list[list[dict]], system_prompt: str | None) -> list[dict]:
    """System turn first, then the examples as earlier turns, then the conversation itself."""
    from components.prompts.chat import with_system

    own_system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(own_system):]
    return with_system(own_system + [m for shot in shots for m in shot] + rest, system_prompt)


def prompt_ids(tokenizer, messages: list[dict], shots: list[list[dict]], system_prompt: str | None) -> list[int]:
    """The prompt's token ids with the examples before the conversation (BOS and template as everywhere)."""
    from components.prompts.chat import prompt_ids as chat_prompt_ids

    return chat_prompt_ids(tokenizer, with_shots(messages, shots, system_prompt))
