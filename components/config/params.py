"""Typed configuration: one pydantic model of every param, read from params.yaml.

Overrides use the `dvc exp run -S` syntax: `-S train.lr=1e-4` (the value is parsed as YAML).
Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from components.core.errors import ConfigError  # noqa: F401  (re-exported: callers import it from here)
from components.methods import NAMES, get_method, trains
from components.config.sections import (DEFAULT_MAX_DRIFT, DOLLY_PATTERN, DataConfig, EvaluateConfig,  # noqa: F401
                                        ExportConfig, GatesConfig, MergeConfig, ModelConfig, Paths, PrepareConfig,
                                        RegistryConfig, Section, ValidateConfig)  # (re-exported)


QLORA_METHODS = ("lora", "dora", "rslora", "adalora", "hybrid")  # adapters that train on a 4-bit base (bitsandbytes)


class _TrainLoop(Section):
    """`train`: the loop's settings; `TrainConfig` below adds each method's own block."""

    method: str = Field("lora", description="one of components.methods.NAMES")
    steps: int | None = Field(None, ge=1, description="optimizer steps; null: from train.epochs (and train.budget_minutes)")
    epochs: float | None = Field(None, gt=0, description="passes over the train split when train.steps is null; "
                                 "null: 1, or with train.budget_minutes as many as fit (at most MAX_BUDGET_EPOCHS)")
    batch_size: int = Field(16, ge=1)
    batch_tokens: int | None = Field(None, ge=8, description="a token budget per step instead of batch_size rows: "
                                     "length-grouped rows while rows x the longest row (packing: their sum) fits")
    lr_scaling: Literal["sqrt", "none"] = Field("sqrt", description="batch_tokens: lr x sqrt(mean rows per step / "
                                                "batch_size), Adam's square-root rule; none: lr as given")
    budget_minutes: float | None = Field(None, gt=0, description="train for what fits this many minutes (at most "
                                         "train.steps): the first steps are timed, the steps and the lr schedule set "
                                         "from them")
    loss_norm: Literal["tokens", "batch"] = Field(
        "tokens", description="tokens: a step's summed label-token loss over the schedule's mean label tokens per step "
                              "(every token weighs the same, as in one big batch); batch: the step's mean (every step "
                              "weighs the same, so short-answer batches count more under length grouping)")
    micro_batch_tokens: int | None = Field(4096, ge=8, description="the most computed tokens (rows x the longest; "
                                           "packing: their sum) one forward and backward pass holds: a step over it "
                                           "runs in micro-batches whose gradients add up to the step's (memory, not "
                                           "the update, changes); null: never split. One process only")
    neftune_alpha: float | None = Field(None, gt=0, description="NEFTune: uniform noise of scale alpha / sqrt(tokens "
                                        "x hidden) on the input embeddings while training (Jain et al., 2023); null: off")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: on CUDA bf16 (fp16 with a grad scaler where bf16 is missing); on a CPU with native "
                            "bf16, bf16 only where a timed step at the run's shape is >= 1.15x faster; else fp32")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto: CUDA when present, then MPS, "
                                                                              "else the CPU; evaluate and merge follow it")
    quantize_base: Literal["4bit"] | None = Field(None, description="QLoRA: the frozen base in 4 bits (bitsandbytes, "
                                                                    "CUDA only) under a LoRA-family adapter")
    threads: int = Field(0, ge=0, description="torch threads; 0 = all cores (OMP_NUM_THREADS when set)")
    checkpoint_every: int = Field(20, ge=1)
    spike_factor: float = Field(3.0, gt=1, description="stop when a loss exceeds this x the lower of the first loss and the recent lower quartile")
    spike_warmup: int = Field(10, ge=1, description="steps before the spike detector arms")
    log_every: int = Field(5, ge=1)
    group_by_length: bool = Field(True, description="batches of similar lengths (little padding); false: random batches")
    packing: bool = Field(False, description="a step's examples end to end in rows of prepare.max_length, attention "
                                             "kept within each example (no padding computed)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, slower")
    compile: bool = Field(False, description="torch.compile each decoder layer (compiles on the first steps)")
    processes: int = Field(1, ge=1, description="data-parallel training processes on this machine (accelerate, gloo on CPU); "
                                               "inside `accelerate launch` the launcher decides")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in NAMES:
            raise ValueError(f"unknown method {v!r}; choose from {', '.join(NAMES)}")
        return v

    def method_config(self):
        """The chosen method's block."""
        return getattr(self, self.method)

    def method_lr(self) -> float:
        """The learning rate for `batch_size` rows a step (the method block's own, else train.lr)."""
        return self.method_config().lr or self.lr

    def step_lr(self, rows_per_step: float) -> float:
        """The learning rate used: method_lr, scaled for a token budget's mean rows per step (lr_scaling)."""
        if self.batch_tokens is None or self.lr_scaling == "none":
            return self.method_lr()
        return self.method_lr() * math.sqrt(rows_per_step / self.batch_size)

    @model_validator(mode="after")  # settings that cannot run together, refused before any model loads
    def _settings_work_together(self):
        if self.budget_minutes and self.method == "adalora":
            raise ValueError("train.budget_minutes: adalora's rank schedule needs train.steps up front; set train.steps")
        if self.packing and self.processes > 1 and trains(self.method):
            raise ValueError("train.packing runs in one process (train.processes=1)")
        if self.batch_size < self.processes:
            raise ValueError(f"train.batch_size {self.batch_size} is smaller than train.processes {self.processes}: "
                             "every process needs a share of each batch")
        if self.quantize_base == "4bit" and self.method not in QLORA_METHODS:
            raise ValueError(f"train.quantize_base=4bit (QLoRA) needs a LoRA-family method ({', '.join(QLORA_METHODS)}), "
                             f"not {self.method}")
        return self


def _method_blocks() -> dict:
    """train.<name> for every method module in components/methods/: its `Config`, with its defaults."""
    blocks = {}
    for name in NAMES:
        if name in _TrainLoop.model_fields:
            raise TypeError(f"components/methods/{name}.py: the name clashes with the setting train.{name}")
        config = get_method(name).Config
        blocks[name] = (config, config())
    return blocks


# each method's own block (components/methods/<name>.py), found there; `lr: null` in it means train.lr
TrainConfig = create_model("TrainConfig", __base__=_TrainLoop, __module__=__name__, **_method_blocks())


class Params(Section):
    seed: int = 42
    allow_outside_project: bool = Field(False, description="let data and output paths leave the project folder")
    paths: Paths = Paths()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gates: GatesConfig = GatesConfig()
    merge: MergeConfig = MergeConfig()
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def check_confined(p: Params, root: str | Path = ".") -> None:
    """Data and output paths must resolve (symlinks followed) inside the project unless allowed."""
    if p.allow_outside_project:
        return
    root = Path(root).resolve()
    named = {f"paths.{k}": v for k, v in p.paths.model_dump().items()}
    named.update({"data.path": p.data.path, "data.test_path": p.data.test_path,
                  "registry.deploy_dir": p.registry.deploy_dir})
    for key, value in named.items():
        if value is None:
            continue
        resolved = (root / value).resolve()
        if not resolved.is_relative_to(root):
            raise ConfigError(f"{key} {value!r} resolves to {resolved}, outside the project ({root}); "
                              "set allow_outside_project=true to allow it")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part")
    return parts, yaml.safe_load(value) if value.strip() else ""


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (a copy). Schema checks happen in `validate_params`."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def validate_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{source}: {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def read_params_file(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    raw = apply_overrides(read_params_file(path), overrides or [])
    return validate_params(raw, str(path))


def write_overrides(path: str | Path, overrides: list[str]) -> None:
    """Persist overrides into params.yaml (comments kept), as `dvc exp run -S` does."""
    from ruamel.yaml import YAML

    from components.core.atomic import atomic_write_text

    path = Path(path)
    validate_params(apply_overrides(read_params_file(path), overrides), str(path))
    ry = YAML()
    ry.preserve_quotes = True
    doc = ry.load(path.read_text(encoding="utf-8")) if path.exists() else {}
    for text in overrides:
        parts, value = parse_override(text)
        node = doc
        for p in parts[:-1]:
            if p not in node:
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    import io

    buf = io.StringIO()
    ry.dump(doc, buf)
    atomic_write_text(path, buf.getvalue())


def params_dict(p: Params) -> dict:
    return p.model_dump(by_alias=True, mode="json")
