"""The architecture matrix, prompt side: for every family's tokenizer, BOS is at position 0 exactly once where the
tokenizer adds it (never where it does not), the learned reply ends with the template's end-of-turn token, and that
token and every generation EOS id are stop ids. Checked in each place that builds ids (prepare's train and test
rows, drift prompts, ICL prompts, raw completions)."""

from __future__ import annotations

import pytest

from families import FAMILIES

from components.prompts.chat import IGNORE_INDEX, encode_conversation, encode_text, end_of_turn, prompt_ids, stop_ids

MESSAGES = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "What is the capital of Peru?"},
            {"role": "assistant", "content": "Lima is the capital of Peru."}]


def bos_problem(ids: list[int], bos: int | None, wanted: bool) -> str | None:
    """Why these prompt ids break the family's BOS rule, or None when they keep it."""
    if not wanted:
        return f"BOS {bos} at position 0 of a model that adds none" if bos is not None and ids[:1] == [bos] else None
    if ids[:1] != [bos]:
        return f"BOS dropped: ids start {ids[:3]}"
    if ids[1:2] == [bos]:
        return "BOS doubled"
    return None


def test_the_bos_check_sees_a_dropped_and_a_doubled_bos():
    """Negative control for the check the matrix uses."""
    assert bos_problem([5, 6], 1, True) == "BOS dropped: ids start [5, 6]"
    assert bos_problem([1, 1, 5], 1, True) == "BOS doubled"
    assert bos_problem([1, 5], 1, False) is not None
    assert bos_problem([1, 5], 1, True) is None and bos_problem([5], 1, False) is None


def _tokenizer(folder, choice="auto"):
    from components.prompts.templates import apply, load_prompt_tokenizer

    tok = load_prompt_tokenizer(None, folder)
    apply(tok, choice)
    return tok


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bos_once_where_the_tokenizer_adds_it(family_dirs, name):
    fam, tok = FAMILIES[name], _tokenizer(family_dirs[name])
    bos = tok.bos_token_id
    ids, labels = encode_conversation(tok, MESSAGES)
    for what, got in {"training row": ids, "prompt": prompt_ids(tok, MESSAGES[:2]),
                      "raw completion": encode_text(tok, "The capital of Peru is")}.items():
        assert bos_problem(got, bos, fam.adds_bos) is None, f"{name} {what}: {bos_problem(got, bos, fam.adds_bos)}"
    if bos is not None:  # the template's BOS text and the tokenizer's make one; none where neither writes it
        assert ids.count(bos) == (1 if fam.adds_bos else 0)


@pytest.mark.parametrize("name", ["gemma2", "mistral"])
def test_a_template_that_refuses_a_system_turn_gets_it_in_the_first_user_turn(family_dirs, name):
    """Gemma 2's and Mistral's templates raise on a system turn; the configured system prompt still reaches the
    model, in front of the first question, and the reply is still learned."""
    tok = _tokenizer(family_dirs[name])
    text = tok.decode(prompt_ids(tok, MESSAGES[:2]))
    assert "Answer.\n\nWhat is the capital of Peru?" in text
    ids, labels = encode_conversation(tok, MESSAGES)
    assert tok.decode([x for x in labels if x != IGNORE_INDEX]).startswith(MESSAGES[-1]["content"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_end_of_turn_is_learned_and_stops_generation(family_dirs, name):
    from transformers import GenerationConfig

    fam, tok = FAMILIES[name], _tokenizer(family_dirs[name])
    eot = tok.convert_tokens_to_ids(fam.end_of_turn)
    assert end_of_turn(tok) == (fam.end_of_turn, eot)
    ids, labels = encode_conversation(tok, MESSAGES)
    learned = [x for x in labels if x != IGNORE_INDEX]
    assert learned[-1] == eot and tok.decode(learned[:-1]).strip() == MESSAGES[-1]["content"]
    gen = GenerationConfig.from_pretrained(family_dirs[name]) if fam.generation_eos else None
    stops = stop_ids(tok, gen.eos_token_id if gen else None)
    assert eot in stops and tok.eos_token_id in stops
    assert all(tok.convert_tokens_to_ids(t) in stops for t in fam.generation_eos)


def test_a_template_override_and_a_base_model_default(family_dirs, tmp_path):
    """A base model without a template gets `plain`; a user's choice replaces a model's own template."""
    from components.prompts.templates import load_prompt_tokenizer, resolve

    assert resolve(load_prompt_tokenizer(None, family_dirs["gemma3"]), "auto")[1].startswith("auto: the model has no chat template")
    base = _tokenizer(family_dirs["gemma3"])
    assert "Question: What is the capital of Peru?\nAnswer: " in base.decode(prompt_ids(base, MESSAGES[:2]))
    chatml = _tokenizer(family_dirs["gemma2"], "chatml")
    assert "<|im_start|>user" in chatml.decode(prompt_ids(chatml, MESSAGES[:2]))
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}")
    own = _tokenizer(family_dirs["qwen2"], str(jinja))
    assert own.decode(prompt_ids(own, MESSAGES[:2])) == "<<Answer.>><<What is the capital of Peru?>>"


@pytest.mark.parametrize("name", ["gemma3", "llama", "qwen2"])
def test_prepare_drift_and_icl_ids_keep_the_bos_rule(family_dirs, name, tmp_path):
    """Stage by stage: prepare's train rows and test prompts, drift prompts and ICL prompts."""
    from datasets import load_from_disk

    from components.config.params import PrepareConfig
    from components.data.datagen import write_dataset
    from components.data.prepare import run_prepare
    from components.data.validate import run_validate
    from components.evaluation.drift import drift_samples
    from components.methods.icl import prompt_ids as icl_prompt_ids
    from components.prompts.templates import load_prompt_tokenizer
    from conftest import tiny_params

    fam = FAMILIES[name]
    p = tiny_params(tmp_path, family_dirs[name], [f"model.source={family_dirs[name]}"])
    write_dataset(tmp_path / "qa.jsonl")
    run_validate(p.data, p.validate_, tmp_path / "validated")
    stats = run_prepare(tmp_path / "validated", family_dirs[name], PrepareConfig(max_length=128), tmp_path / "prepared")
    assert stats["prompt"]["bos"] is fam.adds_bos and stats["prompt"]["end_of_turn"] == fam.end_of_turn
    tok = load_prompt_tokenizer(tmp_path / "prepared", family_dirs[name])
    ds = load_from_disk(str(tmp_path / "prepared" / "dataset"))
    bos = tok.bos_token_id
    for split, key in (("train", "input_ids"), ("test", "prompt_ids")):
        bad = [bos_problem(r[key], bos, fam.adds_bos) for r in ds[split]]
        assert not any(bad), f"{name} prepare {split}: {next(b for b in bad if b)}"
    drift = drift_samples(tok, [{"id": "d1", "prompt": "Name a colour."}], PrepareConfig())
    assert bos_problem(drift[0]["prompt_ids"], bos, fam.adds_bos) is None
    shots = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert bos_problem(icl_prompt_ids(tok, MESSAGES[1:2], shots, "Answer."), bos, fam.adds_bos) is None
