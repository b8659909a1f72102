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
    questions = [r["question"] for r in generate_rows()[:11]]
    render = lambda q: tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)  # noqa: E731
    prompts = [tok(render(q), add_special_tokens=False)["input_ids"] for q in questions]
    assert len({len(p) for p in prompts}) > 3  # prompts of several lengths: left padding is exercised
    with torch.no_grad():  # make EOS win where the answer's hidden state leans one way, so rows end at different steps
        free = one_at_a_time(model, tok, prompts, 12)
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied from the embeddings
        h = torch.cat([model.model(input_ids=torch.tensor([p + a])).last_hidden_state[0, len(p) - 1:]
                       for p, a in zip(prompts, free)])
        u = torch.linalg.svd(h - h.mean(0), full_matrices=False).Vh[0]  # the direction in which the states differ most
        s, top = h @ u, (h @ model.lm_head.weight.T).max(-1).values
        k = 1.05 * (top[s >= s.median()] / s[s >= s.median()]).max()
        model.lm_head.weight[tok.eos_token_id] = k * u
    expected = one_at_a_time(model, tok, prompts, 12)
    lengths = [len(e) for e in expected]  # answers that ended at EOS before the limit (one mid-answer), and full ones
    assert any(n == 12 for n in lengths) and any(n < 12 for n in lengths) and any(0 < n < 12 for n in lengths), lengths
    for batch_size in (4, 16):
        got, stats = greedy_generate(model, tok, prompts, 12, batch_size, progress=False)
        assert got == expected
        assert stats["new_tokens"] == sum(map(len, expected))
