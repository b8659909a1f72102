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


# families that fuse projections into one Linear (Phi-3: qkv_proj, gate_up_proj): a separate name targets the fused one
FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
         "up_proj": "gate_up_proj"}


def peft_targets(model, names: list[str]) -> list[str]:
    """The target module names as this model spells them (a fused projection stands for its parts, as Phi-3's
    qkv_proj for q/k/v_proj); a clear error for a name the model does not have."""
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    names = list(dict.fromkeys(t if t in present or FUSED.get(t) not in present else FUSED[t] for t in names))
    missing = [t for t in names if t not in present]
    if missing:
        raise ValueError(f"target_modules {missing} not found in the model; it has e.g. "
                         f"{sorted(x for x in present if x and not x.isdigit())[:12]}")
    return list(names)
