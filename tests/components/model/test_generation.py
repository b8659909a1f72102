"""The evaluate stage's batched generation answers exactly as one generate call per question."""

import torch

from components.model.generation import greedy_generate


def one_at_a_time(model, tok, prompts, max_new_tokens):
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            toks = gen[0, len(p):].tolist()
            out.append(toks[: toks.index(tok.eos_token_id)] if tok.eos_token_id in toks else toks)
    return out


def test_batched_answers_equal_one_at_a_time(tiny_model_dir):
    from components.model.base_model import load_base
    from components.data.datagen import generate_rows

    model, tok = load_base(tiny_model_dir)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # make the end-of-answer token likely, so that rows of a batch finish at different steps
        model.lm_head.weight[tok.eos_token_id] += 0.5 * model.lm_head.weight.std() * torch.randn(model.config.hidden_size)
    questions = [r["question"] for r in generate_rows()[:11]]
    render = lambda q: tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)  # noqa: E731
    prompts = [tok(render(q), add_special_tokens=False)["input_ids"] for q in questions]
    assert len({len(p) for p in prompts}) > 3  # prompts of several lengths: left padding is exercised
    expected = one_at_a_time(model, tok, prompts, 12)
    for batch_size in (4, 16):
        got, stats = greedy_generate(model, tok, prompts, 12, batch_size, progress=False)
        assert got == expected
        assert stats["new_tokens"] == sum(map(len, expected))
