"""Export stage: ONNX with a KV cache, parity-checked against PyTorch, packed into a bundle."""

from __future__ import annotations

from components.core.errors import UserError
import json
import shutil
import time
from pathlib import Path

from components.evaluation.diagnosis import diagnosis_markdown
from components.evaluation.evaluate import test_samples
from components.evaluation.gates import PROMOTED_PREDICTIONS
from components.model.generation import greedy_generate
from components.bundle.format import write_checksums
from components.bundle.onnx_decoder import OnnxCausalLM
from components.core.atomic import atomic_dir, atomic_write_json, atomic_write_text, file_md5
from components.core.layout import (CHECKSUMS, GATE_METRICS, GENERATION_CONFIG, MODEL_CARD_JSON, MODEL_CARD_MD,
                                    MODEL_ONNX)
from components.config.params import Params, params_dict
from components.core.runtime import set_seed, set_threads
from components.core.verdict import verdict
from components.methods import route, shipped_files

CARD_PARAMS = ("seed", "model", "data", "prepare", "train", "evaluate", "export")  # the export stage's params in dvc.yaml


class ExportCheckFailed(UserError, RuntimeError):
    """An export whose parity check failed: nothing enters the bundle."""


def _kv_wrapper(model):
    import torch
    from transformers import DynamicCache

    class KVCacheLM(torch.nn.Module):
        """Flat past key/value tensors in, logits and flat present tensors out."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = DynamicCache(config=self.lm.config)
            for i in range(len(past) // 2):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return KVCacheLM(model)


def kv_shape(config) -> tuple[int, int, int]:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def light_optimize(model_ir) -> None:
    """The exporter's graph clean-up (inlining, constant folding, dead nodes, shared initializers and
    subexpressions, names) without its pattern-rewrite rules: on SmolLM2-135M those rules took about half the
    export (their matcher rescans the graph per candidate) and left ONNX Runtime, which fuses at load, no
    faster; the greedy tokens are the same either way."""
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants

    common.InlinePass()(model_ir)
    for _ in range(2):  # a fold can expose another
        fold_constants(model_ir)
        common.RemoveUnusedNodesPass()(model_ir)
    for clean_up in (common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass(),
                     common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                     common.DeduplicateInitializersPass(), common.CommonSubexpressionEliminationPass(),
                     common.OutputFixPass(), common.NameFixPass()):
        clean_up(model_ir)


def export_onnx(model, out_dir: Path, opset: int) -> None:
    """torch.onnx.export (dynamo) of the KV-cache wrapper with dynamic batch, sequence and past lengths."""
    import logging

    import torch
    import torch.onnx  # noqa: F401  (configures its loggers; quiet the optional-torchvision notes after)

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model.eval()
    model.config.use_cache = True
    layers, kv_heads, head_dim = kv_shape(model.config)
    batch, seq, past_len = 1, 3, 4
    past = tuple(torch.zeros(batch, kv_heads, past_len, head_dim) for _ in range(2 * layers))
    args = (torch.ones(batch, seq, dtype=torch.long), torch.ones(batch, past_len + seq, dtype=torch.long),
            torch.arange(past_len, past_len + seq).unsqueeze(0), past)
    B, S, P, T = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    dyn = ({0: B, 1: S}, {0: B, 1: T}, {0: B, 1: S}, tuple({0: B, 2: P} for _ in past))
    names_in = ["input_ids", "attention_mask", "position_ids"] + [f"past.{i // 2}.{'kv'[i % 2]}" for i in range(2 * layers)]
    names_out = ["logits"] + [f"present.{i // 2}.{'kv'[i % 2]}" for i in range(2 * layers)]
    with torch.inference_mode():
        program = torch.onnx.export(_kv_wrapper(model).eval(), args, dynamo=True, opset_version=opset,
                                    input_names=names_in, output_names=names_out, dynamic_shapes=dyn,
                                    optimize=False, verbose=False)
    light_optimize(program.model)
    program.save(str(out_dir / MODEL_ONNX), external_data=True)
    atomic_write_json(out_dir / "onnx_io.json", {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
                                                 "inputs": names_in, "outputs": names_out, "opset": opset})


def model_card(params: Params, metrics: dict, parity: dict) -> str:
    rows = "\n".join(f"| {k} | {metrics['base'].get(k, float('nan')):.2f} | {metrics['tuned'][k]:.2f} |"
                     for k in GATE_METRICS)
    gates = "\n".join(f"- {g['line']}" for g in metrics["gates"]["gates"])
    variant_lines = "\n".join(
        f"- {v} variant (`{r['file']}`): ROUGE-L {r['rouge-l']:.2f} vs fp32 {r['rouge-l_fp32']:.2f} on {r['samples']} "
        f"questions (allowed drop {r['max_drop']}), {r['tokens_per_s']} tokens/s: {'shipped' if r['passed'] else 'not shipped'}"
        for v, r in parity.get("variants", {}).items())
    d = metrics["tuned"].get("drift")
    drift = (f"## Drift off general behaviour\n\n- On {d['prompts']} general prompts (`{params.gates.drift_prompts}`): loss on "
             f"the base model's answers {d['base_loss']:.3f} -> {d['tuned_loss']:.3f} nats/token (drift {d['drift']:+.3f}, "
             f"gate `gates.max_drift`: {params.gates.max_drift}); first sentence still the base model's in "
             f"{100 * d['first_sentence_match']:.0f}% of answers\n\n" if d and d.get("drift") is not None else
             f"## Drift off general behaviour\n\n- Not measured: {d['skipped']}\n\n" if d and d.get("skipped") else "")
    return f"""# peftpipe model bundle

- Base model: `{params.model.source}`
- Method: `{params.train.method}`
- Data: `{params.data.path}` (md5 `{file_md5(params.data.path)}`)
- Seed: {params.seed}

## Metrics on the test split ({metrics['tuned'].get('samples')} samples)

| metric | base | fine-tuned |
|---|---|---|
{rows}

## Gates

{gates}

{chr(10).join(diagnosis_markdown(metrics["gates"].get("diagnosis")))}
{drift}## ONNX parity with PyTorch

- greedy tokens identical on {parity['prompts']} prompts: {parity['greedy_tokens_equal']}
- ONNX Runtime decode: {parity['onnx_tokens_per_s']} tokens/s (PyTorch: {parity['torch_tokens_per_s']})
{variant_lines}

Files are listed with their SHA-256 in `{CHECKSUMS}`; `peftpipe generate` verifies them before loading.
"""


def parity_verdict(parity: dict) -> dict:
    """The export-parity verdict: ONNX Runtime's greedy tokens equal PyTorch's on every parity prompt."""
    bad = parity["mismatches"]
    return verdict("export_parity", "export_parity", parity["greedy_tokens_equal"], len(bad), 0,
                   f"ONNX greedy tokens equal PyTorch's on {parity['prompts'] - len(bad)} of {parity['prompts']} prompts"
                   + (f" (differ on prompts {bad})" if bad else ""))


def quantized_variants(params: Params, folder: Path, prepared_dir, tokenizer, shots, threads: int,
                       stops: list[int], vocab_size: int) -> dict:
    """Each variant in export.quantize, written beside model.onnx and kept only if its ROUGE-L gate passes."""
    if not params.export.quantize:
        return {}
    from components.model.capabilities import LARGE_VOCAB

    embeddings = params.export.quantize_embeddings
    if embeddings == "auto":  # measured: 2.1x int8 decode at a 152k vocabulary, 1.1x at SmolLM2's 49k
        embeddings = vocab_size >= LARGE_VOCAB
    from components.evaluation.evaluate import prompts_for
    from components.deploy.quantize import answers, check_variant

    samples = test_samples(prepared_dir, params.export.quant_eval_samples, params.prepare.split_seed)
    prompts = prompts_for(samples, tokenizer, shots, params.prepare.system_prompt)
    refs = [s.get("answers") or [s["answer"]] for s in samples]
    fp32 = answers(OnnxCausalLM(folder, threads), prompts, params.evaluate.max_new_tokens, stops)
    out = {}
    for v in params.export.quantize:
        out[v] = check_variant(folder, v, prompts, refs, tokenizer, params.evaluate.max_new_tokens,
                               params.export.max_quant_rouge_l_drop, params.evaluate.language,
                               params.evaluate.metric_style, threads, fp32, stops, embeddings)
        verdict = "shipped" if out[v]["passed"] else "NOT shipped"
        print(f"{v}: ROUGE-L {out[v]['rouge-l']:.2f} vs fp32 {out[v]['rouge-l_fp32']:.2f} "
              f"(limit -{out[v]['max_drop']}), {out[v]['tokens_per_s']} vs {out[v]['tokens_per_s_fp32']} tokens/s: {verdict}")
    return out


def run_export(params: Params, merged_dir: str | Path, prepared_dir: str | Path, eval_base_dir: str | Path,
               eval_dir: str | Path, gate_dir: str | Path, out_dir: str | Path) -> dict:
    """Export the merged model to an ONNX bundle; fail unless ONNX greedy output equals PyTorch's."""
    from components.model import kv_prefix
    from components.model.base_model import load_base
    from components.evaluation.evaluate import prompts_for
    from components.methods.icl import read_shots
    from components.deploy.quantize import quantization_verdict
    from components.prompts.chat import stop_ids

    threads = set_threads(params.train.threads)
    set_seed(params.seed)
    merged_dir = Path(merged_dir)
    method = json.loads((merged_dir / "merge_report.json").read_text())["method"]  # what the merge stage shipped
    model, tokenizer = load_base(merged_dir)
    prefix = kv_prefix.load(merged_dir) if route(method) == "kv_prefix" else None
    shots = read_shots(merged_dir) if route(method) == "icl" else None
    samples = test_samples(prepared_dir, params.export.parity_samples, params.prepare.split_seed)
    prompts = prompts_for(samples, tokenizer, shots, params.prepare.system_prompt)
    n_new, eos = params.export.max_new_tokens, stop_ids(tokenizer, model.generation_config.eos_token_id)
    metrics = {"base": json.loads((Path(eval_base_dir) / "metrics.json").read_text()),
               "tuned": json.loads((Path(eval_dir) / "metrics.json").read_text()),
               "gates": json.loads((Path(gate_dir) / "gates.json").read_text())}
    with atomic_dir(out_dir) as tmp:
        for extra in shipped_files(method):  # the prompt method's prefix or the ICL examples ship too
            shutil.copy(merged_dir / extra, tmp / extra)
        t0 = time.perf_counter()
        export_onnx(model, tmp, params.export.opset)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if prefix is None:
            torch_tokens, _ = greedy_generate(model, tokenizer, prompts, n_new, batch_size=1, progress=False)
        else:
            torch_tokens = [kv_prefix.greedy(model, p, prefix, n_new, eos) for p in prompts]
        torch_s = time.perf_counter() - t0
        onnx = OnnxCausalLM(tmp, threads)
        t0 = time.perf_counter()
        onnx_tokens = [onnx.generate(p, n_new, eos) for p in prompts]
        onnx_s = time.perf_counter() - t0
        parity = {"prompts": len(prompts), "greedy_tokens_equal": onnx_tokens == torch_tokens,
                  "mismatches": [i for i, (a, b) in enumerate(zip(onnx_tokens, torch_tokens)) if a != b],
                  "onnx_tokens_per_s": round(sum(map(len, onnx_tokens)) / onnx_s, 2) if onnx_s else None,
                  "torch_tokens_per_s": round(sum(map(len, torch_tokens)) / torch_s, 2) if torch_s else None,
                  "export_s": round(export_s, 1), "kv_prefix_tokens": kv_prefix.prefix_length(prefix) if prefix else 0,
                  "icl_shots": len(shots) if shots else 0}
        parity["verdicts"] = [parity_verdict(parity)]
        if not parity["greedy_tokens_equal"]:  # the verdicts beside the (unwritten) bundle, as the merge stage does
            atomic_write_json(Path(str(out_dir) + "_report.json"), parity)
            raise ExportCheckFailed(f"ONNX greedy output differs from PyTorch on prompts {parity['mismatches']}")
        parity["variants"] = quantized_variants(params, tmp, prepared_dir, tokenizer, shots, threads, eos,
                                                model.config.vocab_size)
        parity["verdicts"] += [quantization_verdict(v, r) for v, r in parity["variants"].items()]
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / GENERATION_CONFIG, {
            "max_new_tokens": params.evaluate.max_new_tokens, "do_sample": False,
            # every stop id (end of turn and each EOS): serving and other runtimes stop where training ended turns
            "eos_token_id": eos, "stop_token_ids": eos, "pad_token_id": tokenizer.pad_token_id,
            "system_prompt": params.prepare.system_prompt})
        card = {"base_model": params.model.source, "method": params.train.method,
                "data": {"path": params.data.path, "md5": file_md5(params.data.path)},
                "params": {k: v for k, v in params_dict(params).items() if k in CARD_PARAMS}, "metrics": metrics, "parity": parity}
        atomic_write_json(tmp / MODEL_CARD_JSON, card)
        shutil.copy(Path(eval_dir) / "predictions.jsonl", tmp / PROMOTED_PREDICTIONS)  # for no-regression gates later
        atomic_write_text(tmp / MODEL_CARD_MD, model_card(params, metrics, parity))
        write_checksums(tmp)
    return parity
