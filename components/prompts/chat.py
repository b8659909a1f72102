"""Chat rendering and tokenisation: the one place that turns messages into a prompt's token ids.

Every stage builds prompts here (prepare, ICL shots, evaluate, drift, merge and export parity, the quantization
gate, the bundle, `/generate`, `/v1`), so they agree on three things:
- the template (`templates.resolve`; the tokenizer prepare saves carries the chosen one);
- BOS: added where the tokenizer adds it and the rendered text does not already start with it, never twice;
- end of turn: the token the template writes after an assistant message is what training learns, and it and
  every EOS id are the stop ids of every generator.
"""

from __future__ import annotations

import weakref

IGNORE_INDEX = -100
_PROBE = "Zq7 reply"  # a reply text whose tokens no template writes, to find what the template puts after it
# per tokenizer (and its current template): (adds BOS, end-of-turn text, end-of-turn id), probed once, not per row
_FACTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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
    """The tokenizer's chat template (the plain Question/Answer template when it has none). A template that refuses a
    system turn (Gemma 2's, Mistral's raise on it) gets the system text in front of the first user turn instead."""
    from jinja2 import TemplateError

    from components.prompts.templates import PLAIN

    template = tokenizer.chat_template or PLAIN
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except TemplateError:
        if not messages or messages[0]["role"] != "system" or len(messages) < 2 or messages[1]["role"] != "user":
            raise
        folded = [{**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}, *messages[2:]]
        return tokenizer.apply_chat_template(folded, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)


def _facts(tokenizer) -> tuple[bool, str, int]:
    cached = _FACTS.get(tokenizer)
    if cached is None or cached[0] != tokenizer.chat_template:
        cached = (tokenizer.chat_template, _probe_bos(tokenizer), *_probe_end_of_turn(tokenizer))
        _FACTS[tokenizer] = cached
    return cached[1:]


def _probe_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    return bool(with_special) and with_special[0] == bos and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts BOS in front of text it encodes (Gemma, Llama: yes; Qwen, SmolLM2: no)."""
    return _facts(tokenizer)[0]


def encode_text(tokenizer, text: str, bos: bool | None = None) -> list[int]:
    """Token ids of rendered text, with BOS in front where the tokenizer adds it and the text does not hold it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if (adds_bos(tokenizer) if bos is None else bos) and ids[:1] != [tokenizer.bos_token_id]:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """A generation prompt's token ids: the conversation rendered with the assistant's turn opened."""
    return encode_text(tokenizer, render(tokenizer, messages, add_generation_prompt=True))


def end_of_turn(tokenizer) -> tuple[str, int]:
    """(text, id) of the token the template writes right after an assistant reply; EOS when it writes none."""
    return _facts(tokenizer)[1:]


def _probe_end_of_turn(tokenizer) -> tuple[str, int]:
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _PROBE}]
    full = render(tokenizer, msgs, add_generation_prompt=False)
    after = full[full.rfind(_PROBE) + len(_PROBE):] if _PROBE in full else ""
    special = set(tokenizer.all_special_ids) | {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                                                if t.special}
    for tok in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if tok in special:
            return tokenizer.convert_ids_to_tokens(tok), tok
        if tokenizer.decode([tok]).strip():  # real text before any control token: the template ends no turn
            break
    return tokenizer.eos_token or "", tokenizer.eos_token_id


def stop_ids(tokenizer, generation_eos=None) -> list[int]:
    """Every id that ends an answer: the end-of-turn token, EOS, and all of generation_config's eos_token_id."""
    extra = generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos]
    ids = [end_of_turn(tokenizer)[1], tokenizer.eos_token_id, *extra]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def encode_conversation(tokenizer, messages: list[dict], last_only: bool = False) -> tuple[list[int], list[int]]:
    """input_ids and labels for a whole conversation: every assistant reply and its end-of-turn token is learned
    (only the last reply with `last_only`), everything else (system, user turns, template markup) is -100."""
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    eot_text, eot_id = end_of_turn(tokenizer)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], add_generation_prompt=True)
        if not prefix.startswith(done):
            raise ValueError("the chat template does not render conversations incrementally")
        piece = prefix[len(done):]
        prompt = encode_text(tokenizer, piece) if not done else tokenizer(piece, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(m["content"], add_special_tokens=False)["input_ids"] + [eot_id]
        ids += prompt + reply_ids
        learned = reply_ids if (i == last or not last_only) else [IGNORE_INDEX] * len(reply_ids)
        labels += [IGNORE_INDEX] * len(prompt) + learned
        full = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        after = prefix + m["content"]
        done = after + eot_text if full.startswith(after + eot_text) else after
    return ids, labels


def stop_set(eos) -> frozenset[int]:
    """Stop ids as a set, from one id, a list of ids, or None (no stop: run to max_new_tokens)."""
    if eos is None:
        return frozenset()
    return frozenset(int(i) for i in eos) if isinstance(eos, (list, tuple, set, frozenset)) else frozenset({int(eos)})
