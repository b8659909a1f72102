"""The architecture matrix, end to end: each family's tiny model through prepare -> train (a LoRA-family and a
prompt method) -> evaluate -> gate -> merge (parity) -> export (ONNX with KV cache, parity, an int8 variant) ->
the bundle answering as the server does. Slow (about half a minute a cell): marked `matrix`; run with -m matrix."""

from __future__ import annotations

import pytest

from conftest import RELAXED_GATES, run_all_stages, tiny_params
from families import FAMILIES

pytestmark = pytest.mark.matrix


@pytest.mark.parametrize("method", ["lora", "ptuning_v2"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_through_every_stage(family_dirs, name, method, tmp_path):
    from components.bundle.loader import Bundle

    fam = FAMILIES[name]
    p = tiny_params(tmp_path, family_dirs[name], RELAXED_GATES + [
        f"model.source={family_dirs[name]}", f"train.method={method}", "train.steps=6",
        "export.max_quant_rouge_l_drop=100", "export.quant_eval_samples=4", "export.quantize=[int8]",
        "evaluate.max_samples=6", "gates.max_drift=null"])  # a random model: drift is noise
    merge, parity = run_all_stages(p)
    assert parity["mismatches"] == [] and merge["passed"]
    bundle = Bundle(p.paths.bundle, variant="fp32")
    ids = bundle.prompt_ids("What is the capital of Peru?")
    bos = bundle.tokenizer.bos_token_id
    assert (ids[:1] == [bos] and ids[1:2] != [bos]) if fam.adds_bos else ids[:1] != [bos]
    eot = bundle.tokenizer.convert_tokens_to_ids(fam.end_of_turn)
    stops = bundle.eos if isinstance(bundle.eos, list) else [bundle.eos]
    assert eot in stops and all(bundle.tokenizer.convert_tokens_to_ids(t) in stops for t in fam.generation_eos)
    assert isinstance(bundle.answer("What is the capital of Peru?", max_new_tokens=4), str)
