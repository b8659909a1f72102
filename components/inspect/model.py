"""`peftpipe model inspect`: what peftpipe will do with this model, before anything trains.

Architecture, parameters, vocabulary, the chat template and why, BOS/EOS/end of turn and the stop ids, one rendered
training row with its label mask, and per stage: which methods apply and how each ships (merge route), export and
quantization.
"""

from __future__ import annotations

from pathlib import Path

from components.config.params import Params
from components.core.atomic import atomic_write_json


def _config_and_tokenizer(params: Params, base_dir: Path):
    """The model's config and tokenizer: from the materialised base model when it exists, else from the source."""
    from transformers import AutoConfig

    from components.model.base_model import load_tokenizer, resolve_source

    tokenizer = load_tokenizer(base_dir, params.model)
    if (base_dir / "config.json").exists():
        return AutoConfig.from_pretrained(base_dir), tokenizer, str(base_dir)
    return (AutoConfig.from_pretrained(**resolve_source(params.model), trust_remote_code=params.model.trust_remote_code),
            tokenizer, params.model.source)


def parameter_count(config) -> int:
    """Parameters of a model built from config on the meta device (no weights are read)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _notes(config, params: Params) -> list[str]:
    from components.core.errors import ConfigError
    from components.model.capabilities import check_supported

    try:
        return check_supported(config, params)
    except ConfigError as e:  # inspect reports what the base_model stage would refuse
        return [f"REFUSED at the base_model stage: {e}"]


def methods_table(params: Params) -> list[dict]:
    from components.methods import NAMES, get_method, route

    ships = {"merge": "merged into the weights", "kv_prefix": "a KV prefix on the unchanged base",
             "weights": "its own trained weights", "icl": "its examples (no training)"}
    return [{"method": n, "family": get_method(n).FAMILY, "ships": ships[route(n)],
             "default": n == params.train.method} for n in NAMES]


def inspect_model(params: Params, out_dir: str | Path | None = None) -> dict:
    from components.bundle.format import VARIANTS
    from components.model.capabilities import embedding_share
    from components.prompts.chat import IGNORE_INDEX, adds_bos, encode_conversation, end_of_turn, stop_ids, with_system
    from components.prompts.templates import apply

    config, tok, where = _config_and_tokenizer(params, Path(params.paths.base_model))
    why = apply(tok, params.prepare.chat_template)
    gen_eos = None
    try:
        from transformers import GenerationConfig

        gen_eos = GenerationConfig.from_model_config(config).eos_token_id
    except Exception:  # noqa: BLE001  (an old config without generation fields: EOS alone)
        pass
    messages = with_system([{"role": "user", "content": "What is the capital of Peru?"},
                            {"role": "assistant", "content": "Lima."}], params.prepare.system_prompt)
    ids, labels = encode_conversation(tok, messages)
    learned = [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    eot_text, eot_id = end_of_turn(tok)
    total = parameter_count(config)
    report = {
        "source": where, "architecture": (config.architectures or [config.model_type])[0],
        "model_type": config.model_type, "parameters": total, "layers": config.num_hidden_layers,
        "hidden": config.hidden_size, "vocab_size": config.vocab_size,
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "embedding_share": round(embedding_share(config), 3),
        "chat_template": why, "bos": {"token": tok.bos_token, "added": adds_bos(tok)},
        "eos": tok.eos_token, "end_of_turn": eot_text, "stop_ids": stop_ids(tok, gen_eos),
        "stop_tokens": tok.convert_ids_to_tokens(stop_ids(tok, gen_eos)),
        "sample": {"text": tok.decode(ids), "tokens": len(ids), "learned": tok.decode(learned),
                   "mask": "".join("L" if lab != IGNORE_INDEX else "." for lab in labels)},
        "notes": _notes(config, params),
        "methods": methods_table(params),
        "export": {"onnx": "decoder with KV cache, greedy parity against PyTorch",
                   "quantize": {v: f"{VARIANTS[v]} behind the ROUGE-L gate" for v in params.export.quantize}},
    }
    if out_dir:
        atomic_write_json(Path(out_dir) / "model_inspect.json", report)
    return report


def print_model_inspection(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{report['source']} ({report['architecture']})")
    t.add_column("what")
    t.add_column("value")
    rows = [("parameters", f"{report['parameters']:,} in {report['layers']} layers, hidden {report['hidden']}"),
            ("vocabulary", f"{report['vocab_size']:,} ({report['embedding_share']:.0%} of weights in embedding/head, "
                           f"{'tied' if report['tied_embeddings'] else 'untied'})"),
            ("chat template", report["chat_template"]),
            ("BOS", f"{report['bos']['token']!r}, " + ("added at position 0" if report["bos"]["added"] else "not added")),
            ("EOS / end of turn", f"{report['eos']!r} / {report['end_of_turn']!r}"),
            ("stop tokens", ", ".join(f"{t!r}" for t in report["stop_tokens"]) + f"  (ids {report['stop_ids']})"),
            ("training row", report["sample"]["text"]),
            ("learned (loss on)", report["sample"]["learned"]),
            ("label mask (L = learned)", report["sample"]["mask"]),
            ("export", report["export"]["onnx"]),
            ("quantized variants", ", ".join(report["export"]["quantize"]) or "none")]
    rows += [("note", n) for n in report["notes"]]
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)
    m = Table(title="methods")
    for c in ("method", "family", "ships"):
        m.add_column(c)
    for r in report["methods"]:
        m.add_row(r["method"] + (" (default)" if r["default"] else ""), r["family"], r["ships"])
    console.print(m)
