"""What every method module shares: its config base class and the context `apply` receives."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class MethodConfig(BaseModel):
    """A method's own params block (`train.<method>` in params.yaml)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    lr: float | None = Field(None, gt=0, description="learning rate for this method; null = train.lr")


@dataclass(frozen=True)
class Context:
    """What a method may need besides the model and its config."""

    steps: int            # total optimiser steps (AdaLoRA's budget schedule)
    base_dir: str         # the base model folder (tokenizer for text-initialised prompts)
    seed: int


def peft_targets(model, names: list[str]) -> list[str]:
    """Check that target module names exist in the model; a clear error otherwise."""
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in names if t not in present]
    if missing:
        raise ValueError(f"target_modules {missing} not found in the model; it has e.g. "
                         f"{sorted(x for x in present if x and not x.isdigit())[:12]}")
    return list(names)
