"""A message's content as text: a string, or a list of content parts.

OpenAI writes parts as `{"type": "text", "text": ...}`, LLaMA-Factory v1 as `{"type": "text", "value": ...}`.
Text parts are joined in order with nothing between them, as the chat templates that take parts render them
(Qwen2-VL's, Llama 3.2 Vision's): a space or newline between two parts must be in the parts. A part of any other
type (image_url, input_audio, image, ...) cannot be trained on or answered by a text model: ContentError names it.
The data readers and the server's /v1/chat/completions both read content here, so they agree.
"""

from __future__ import annotations

TEXT_KEYS = ("text", "value")  # OpenAI, LLaMA-Factory v1


class ContentError(ValueError):
    """Content that is not text: `reason` says why, `part_type` names a non-text part's type (else None)."""

    def __init__(self, reason: str, part_type: str | None = None, index: int | None = None):
        super().__init__(reason)
        self.reason, self.part_type, self.index = reason, part_type, index


def content_text(content) -> str:
    """The text of a message's content; ContentError for a non-text part or a malformed one."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ContentError(f"content must be a string or a list of parts, not {type(content).__name__}")
    texts = []
    for n, part in enumerate(content):
        if not isinstance(part, dict):
            raise ContentError(f"content part {n + 1} is not an object", index=n)
        kind = part.get("type", "text" if any(k in part for k in TEXT_KEYS) else None)
        if kind != "text":
            raise ContentError(f"content part {n + 1} is of type {kind!r}: only text parts are supported",
                               str(kind), index=n)
        text = next((part[k] for k in TEXT_KEYS if k in part), None)
        if not isinstance(text, str):
            raise ContentError(f"content part {n + 1}: a text part needs a string 'text' (or 'value')", index=n)
        texts.append(text)
    return "".join(texts)
