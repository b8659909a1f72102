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
    from components.training.train import _decoder_and_head

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
    assert _decoder_and_head(model) is not None  # the answer-positions path is the one tested
    questions = ["What is the capital of Peru?", "Name a prime number larger than ten, please.", "Why?"]
    answers = ["Lima.", "Eleven is one; thirteen is another.", "Because the sky scatters blue light more."]
    prompts = [tok(q)["input_ids"] for q in questions]  # unequal lengths: padded batches
    samples = [{"answer": a} for a in answers]
    assert eval_loss(model, tok, samples, prompts, batch_size=3) == pytest.approx(
        full_logits_loss(model, tok, samples, prompts), abs=1e-4)
