"""Large vocabularies: the quantized variants quantize the token embedding and the (tied) LM head too, and still
decode the same greedy tokens as fp32 on a tiny model with a 4,000-token vocabulary."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported_large_vocab(tmp_path_factory, family_dirs):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from components.deploy.export import export_onnx

    cfg = AutoConfig.from_pretrained(family_dirs["qwen2"])
    cfg.vocab_size = 4000
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    out = tmp_path_factory.mktemp("vocab") / "onnx"
    out.mkdir()
    export_onnx(model, out, 18)
    return out


def fp32_tables(path) -> list[str]:
    """Float initializers of at least 1,000 rows: an embedding or LM head left unquantized."""
    import onnx
    from onnx import TensorProto

    m = onnx.load(str(path))
    return [i.name for i in m.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 2
            and max(i.dims) >= 1000 and min(i.dims) >= 16]  # (per-block scales are narrow)


@pytest.mark.parametrize("variant", ["int8", "int4"])
def test_embedding_and_head_are_quantized_with_the_same_greedy_tokens(exported_large_vocab, variant):
    from components.bundle.onnx_decoder import OnnxCausalLM
    from components.deploy.quantize import quantize

    out = exported_large_vocab
    ids = [5, 17, 33, 100, 250, 3999]
    fp32 = OnnxCausalLM(out, 1)
    ref_logits, ref = fp32.step(ids, fp32._empty_past(), 0)[0], fp32.generate(ids, 10, None)
    layers_only = quantize(out / "model.onnx", out / f"layers.{variant}.onnx", variant, embeddings=False)
    assert layers_only == {"head": [], "embedding": []} and fp32_tables(out / f"layers.{variant}.onnx")  # control
    extra = quantize(out / "model.onnx", out / f"all.{variant}.onnx", variant)
    assert extra["head"] and extra["embedding"] and fp32_tables(out / f"all.{variant}.onnx") == []
    assert (out / f"all.{variant}.onnx").stat().st_size < 0.75 * (out / f"layers.{variant}.onnx").stat().st_size
    q = OnnxCausalLM(out, 1, model_file=f"all.{variant}.onnx")
    logits = q.step(ids, q._empty_past(), 0)[0]
    assert np.abs(logits - ref_logits).max() < (0.05 if variant == "int8" else 0.5) * np.abs(ref_logits).max()
    assert q.generate(ids, 10, None) == ref
