"""Refusing client text that holds a model's control tokens (shared by /generate and the /v1 endpoints)."""

from __future__ import annotations


def refuse_control_tokens(bundle, fields: dict[str, str]) -> None:
    """422 naming the field when client text holds one of the model's control tokens (such as <|im_end|>): encoded,
    it would become the real token and could end the user turn and open a system turn of the client's making."""
    from fastapi import HTTPException

    from components.prompts.chat import control_token_in

    for name, text in fields.items():
        hit = control_token_in(text, bundle.control_tokens)
        if hit:
            raise HTTPException(422, [{"loc": ["body", name], "type": "value_error",
                                       "msg": f"{name} contains the control token {hit!r}; special tokens are not accepted in text"}])
