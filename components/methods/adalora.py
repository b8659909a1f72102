"""AdaLoRA (Zhang et al., 2023): SVD-form LoRA whose rank budget moves to the most important layers.

The budget schedule runs in the training loop (`after_step`): ranks start at `init_r`, are pruned
between `tinit` and `steps - tfinal` toward an average of `target_r`, then stay fixed.
"""

from __future__ import annotations

from pydantic import Field

from components.methods.base import Context, MethodConfig, peft_targets

FAMILY = "reparameterised"
ROUTE = "merge"
SAVE = "peft"


class Config(MethodConfig):
    init_r: int = 12
    target_r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    tinit: float = Field(0.1, ge=0, lt=1, description="fraction of steps before pruning starts")
    tfinal: float = Field(0.2, ge=0, lt=1, description="fraction of steps at the end with a fixed budget")
    delta_t: int = Field(5, ge=1, description="steps between budget updates")
    orth_reg_weight: float = 0.5


def apply(model, c: Config, ctx: Context):
    from peft import AdaLoraConfig, get_peft_model

    tinit, tfinal = int(c.tinit * ctx.steps), int(c.tfinal * ctx.steps)
    if tinit + tfinal >= ctx.steps:
        raise ValueError(f"train.adalora: tinit + tfinal ({tinit} + {tfinal} steps) must be below train.steps ({ctx.steps})")
    config = AdaLoraConfig(task_type="CAUSAL_LM", init_r=c.init_r, target_r=c.target_r, lora_alpha=c.alpha,
                           lora_dropout=c.dropout, target_modules=peft_targets(model, c.target_modules),
                           tinit=tinit, tfinal=tfinal, deltaT=c.delta_t, total_step=ctx.steps,
                           orth_reg_weight=c.orth_reg_weight)
    return get_peft_model(model, config)


def after_step(model, step: int) -> None:
    """Update importance scores and the rank budget; call after optimizer.step(), before zero_grad()."""
    model.base_model.update_and_allocate(step)


def extra_state(model) -> dict:
    """The rank allocator's importance averages, so a resumed run allocates exactly like an uninterrupted one."""
    ra = model.base_model.rankallocator
    out = {}
    for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        out.update({f"{kind}::{n}": t.contiguous() for n, t in getattr(ra, kind).items()})
    return out


def load_extra_state(model, tensors: dict) -> None:
    ra = model.base_model.rankallocator
    for key, t in tensors.items():
        kind, name = key.split("::", 1)
        getattr(ra, kind)[name] = t.clone()
