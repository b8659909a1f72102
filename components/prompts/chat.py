"""Chat rendering and tokenisation with loss on assistant replies only."""

from __future__ import annotations

IGNORE_INDEX = -100


def special_tokens(tokenizer) -> list[str]:
    """The tokenizer's control tokens as text (EOS, chat markers, ...): text that holds one would become the token."""
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    return sorted({t for t in [*tokenizer.all_special_tokens, *added] if t}, key=len, reverse=True)


def control_token_in(text: str, tokens: list[str]) -> str | None:
    """The first control token written inside `text`, if any."""
    return next((t for t in tokens if t in text), None)


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Prepend the configured system prompt unless the conversation brings its own."""
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system_prompt}] + messages
    return messages


def render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """The model's chat template (a plain Question/Answer layout for tokenizers without one)."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            parts.append(f"Question: {m['content']}\nAnswer: ")
        else:
            parts.append(f"{m['content']}{tokenizer.eos_token or ''}\n")
    return "".join(parts)


def encode_conversation(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """input_ids and labels for a whole conversation: every assistant reply (and its EOS) is learned,
    everything else (system, user turns, template markup) is masked with -100."""
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    eos_text = tokenizer.eos_token or ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], add_generation_prompt=True)
        if not prefix.startswith(done):
            raise ValueError("the chat template does not render conversations incrementally")
        prompt_ids = tokenizer(prefix[len(done):], add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(m["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids += prompt_ids + reply_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + reply_ids
        full = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        after = prefix + m["content"]
        done = after + eos_text if full.startswith(after + eos_text) else after
    return ids, labels
