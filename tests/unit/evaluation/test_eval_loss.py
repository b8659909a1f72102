"""The evaluate stage's teacher-forced loss: logits only at the answer tokens give the loss of the full logits."""

import pytest
import torch


def full_logits_loss(model, tok, samples, prompts) -> float:
    """The reference: every position's logits, as the model's own forward returns them."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for s, p in zip(samples, prompts):
            ids = tok(s["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            logits = model(torch.tensor([p + ids])).logits[0, len(p) - 1 : -1]
            total += float(torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids), reduction="sum"))
            count += len(ids)
    return total / count


@pytest.mark.parametrize("method", ["base", "lora"])
def test_eval_loss_at_answer_positions_equals_the_full_logits_loss(tiny_model_dir, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.evaluation.evaluate import eval_loss
    from components.training.loss import decoder_and_head

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():  # B starts at zero: give the adapter a part in the loss
            for n, w in model.named_parameters():
                if "lora_B" in n:
                    w.normal_(0, 0.2)
    model.eval()
    assert decoder_and_head(model) is not None  # the answer-positions path is the one tested
    questions = ["What is the capital of Peru?", "Name a prime number larger than ten, please.", "Why?"]
    answers = ["Lima.", "Eleven is one; thirteen is another.", "Because the sky scatters blue light more."]
    prompts = [tok(q)["input_ids"] for q in questions]  # unequal lengths: padded batches
    samples = [{"answer": a} for a in answers]
    assert eval_loss(model, tok, samples, prompts, batch_size=3) == pytest.approx(
        full_logits_loss(model, tok, samples, prompts), abs=1e-4)


def before_the_shared_loss(model, tok, samples, prompts, batch_size, eos=None) -> tuple[float, list[float]]:
    """The reference: evaluate's own loss before it called training's (`_summed_label_loss`, kept here as it was):
    logits at the label positions, a chunk at a time, the chunks' sums added as Python floats. Returns (the mean
    as evaluate reports it, each batch's summed loss)."""
    from components.data.prepare import IGNORE_INDEX
    from components.training import loss as loss_mod
    from components.training.batches import collate

    ce = torch.nn.functional.cross_entropy
    rows = []
    for n, (s, p) in enumerate(zip(samples, prompts)):
        answer = tok(s["answer"], add_special_tokens=False)["input_ids"]
        answer += [tok.eos_token_id] if eos is None or eos[n] or not answer else []
        rows.append({"input_ids": p + answer, "labels": [IGNORE_INDEX] * len(p) + answer})
    sums, count = [], 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i : i + batch_size], tok.pad_token_id)
            labels = batch.pop("labels")
            parts = loss_mod.decoder_and_head(model)
            if parts is None:
                logits = model(**batch).logits[:, -labels.shape[1]:]
                sums.append(float(ce(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                     ignore_index=IGNORE_INDEX, reduction="sum")))
            else:
                decoder, head = parts
                h = decoder(**batch, use_cache=False).last_hidden_state[:, :-1]
                target = labels[:, 1:]
                keep = target != IGNORE_INDEX
                h, target = h[keep], target[keep]
                chunk = max(1, loss_mod.CHUNK_ELEMENTS // head.weight.shape[0])
                sums.append(sum(float(ce(head(h[s : s + chunk]).float(), target[s : s + chunk], reduction="sum"))
                                for s in range(0, len(target), chunk)))
            count += int((labels[:, 1:] != IGNORE_INDEX).sum())
    total = 0.0
    for x in sums:
        total += x
    return round(total / count, 5), sums


@pytest.mark.parametrize("method", ["base", "lora", "prompt"])
@pytest.mark.parametrize("chunk_tokens", [None, 7])
def test_eval_loss_through_the_shared_loss_is_what_evaluate_reported_before(tiny_model_dir, monkeypatch, method,
                                                                            chunk_tokens):
    """evaluate and training share one loss at the answer positions (components/training/loss.py): evaluate's
    numbers are those of its own code before, exactly, on the decoder-and-head path (base: a trainable head, lora:
    a frozen one) and the model's own (prompt tuning), in one chunk or many, with and without padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.config.params import TrainConfig
    from components.evaluation.evaluate import eval_loss
    from components.methods import Context, get_method
    from components.training import loss as loss_mod
    from components.training.batches import collate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if method != "base":
        model = get_method(method).apply(model, getattr(TrainConfig(), method),
                                         Context(steps=1, base_dir=str(tiny_model_dir), seed=0))
        with torch.no_grad():  # LoRA's B starts at zero: give the adapter a part in the loss
            for n, w in model.named_parameters():
                if "lora_B" in n:
                    w.normal_(0, 0.2)
    assert (loss_mod.decoder_and_head(model) is None) == (method == "prompt")
    if chunk_tokens:  # several chunks a batch (the tiny vocabulary fits a whole batch in one)
        monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_tokens * len(tok))
    from components.data.datagen import generate_rows

    rows = generate_rows()[:13]
    prompts = [tok(r["question"])["input_ids"] for r in rows]
    samples = [{"answer": r["answer"]} for r in rows]
    cut = [i % 3 != 0 for i in range(len(rows))]
    for batch_size in (1, 4):  # 1: no padding (no attention mask needed); 4: padded rows
        for eos in (None, cut):
            reported, sums = before_the_shared_loss(model, tok, samples, prompts, batch_size, eos)
            assert eval_loss(model, tok, samples, prompts, batch_size, eos) == reported
            answers = [tok(s["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] * (eos is None or e)
                       for s, e in zip(samples, eos or cut)]
            rows = [{"input_ids": p + a, "labels": [-100] * len(p) + a} for p, a in zip(prompts, answers)]
            with torch.inference_mode():  # each batch's sum, not only the rounded mean, is the same float
                assert [float(loss_mod.summed_label_loss(model, collate(rows[i : i + batch_size], tok.pad_token_id))[0])
                        for i in range(0, len(rows), batch_size)] == sums
