"""Training options around the loop: NEFTune noise, gradient checkpointing and torch.compile, frozen weights kept in
bf16, and the live log (dvclive) beside the loss curve."""

from __future__ import annotations

import math

from components.training.loss import decoder_and_head


def add_neftune(model, alpha: float):
    """NEFTune: while the model trains, its input embeddings get uniform noise in [-m, m], m = alpha / sqrt(tokens x
    hidden) of the batch (Jain et al., 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"); evaluation
    (model.eval()) sees none. Returns the hook's handle."""
    import torch

    def noisy(module, inputs, output):
        if not module.training:
            return output
        m = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
        return output + torch.empty_like(output).uniform_(-m, m)

    return model.get_input_embeddings().register_forward_hook(noisy)


def speed_options(model, cfg) -> None:
    """train.gradient_checkpointing (recompute activations in backward: less memory, more time) and
    train.compile (torch.compile each decoder layer: one graph, reused by every layer)."""
    if cfg.gradient_checkpointing:
        target = model.get_base_model() if getattr(model, "peft_config", None) else model
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        target.config.use_cache = False
    if cfg.compile:
        parts = decoder_and_head(model)
        layers = getattr(parts[0], "layers", None) if parts else None
        for layer in layers if layers is not None else [model]:
            layer.compile(dynamic=True)


def frozen_to_bf16(model) -> int:
    """Store the frozen weights in bf16 once (autocast would cast them every step); trainable ones stay fp32,
    and so do the optimizer's moments. Returns how many tensors were converted."""
    import torch

    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)
            n += 1
    return n


def live_log(run, kept: list[str]):
    """dvclive beside the loss curve (`<train>_live/`: plots/metrics/train/{loss,lr}.tsv and metrics.json, read
    by `dvc plots`, DVC Studio and the VS Code extension); a resumed run replays the steps it keeps."""
    from dvclive import Live

    live = Live(dir=str(run.curve_path.parent / f"{run.out_dir.name}_live"), save_dvc_exp=False, dvcyaml=None)
    for line in kept:
        step, loss, lr = line.rstrip("\n").split("\t")
        live_step(live, int(step), float(loss), float(lr))
    return live


def live_step(live, step: int, loss: float, lr: float) -> None:
    """One step, with the loss curve's rounding (a resumed run's replayed steps read the same)."""
    live.step = step
    live.log_metric("train/loss", round(loss, 6))
    live.log_metric("train/lr", float(f"{lr:.6g}"))
    live.make_summary()
