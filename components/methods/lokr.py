"""LoKr (Yeh et al., 2023): the weight update as a Kronecker product with a low-rank factor."""

from __future__ import annotations

from components.methods import loha
from components.methods.base import Context

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(loha.Config):
    pass


def apply(model, c: Config, ctx: Context):
    from peft import LoKrConfig

    return loha.apply_lycoris(model, c, LoKrConfig)
