"""OpenAI-compatible endpoints over a bundle, for clients that speak that API (the `openai` SDK, LangChain, curl).

GET  /v1/models             the served model
POST /v1/chat/completions   messages (system/user/assistant) through the bundle's chat template
POST /v1/completions        a raw text prompt, continued

Supported: max_tokens (max_completion_tokens), temperature (0: greedy, as /generate), top_p, seed, stop
(up to 4 strings), n=1, stream (server-sent `data:` chunks ending in `data: [DONE]`; stream_options
include_usage), usage and finish_reason; a message's content as a string or a list of text parts. A parameter
the server does not honour (tools, response_format other than text, logprobs, logit_bias, ...) is a 400 naming it
(code unsupported_parameter), not silently ignored; bookkeeping fields (user, metadata, ...) are accepted, and so
is any parameter sent at its "off" value (null, false, [], {}, tool_choice "none", response_format text). Errors
use OpenAI's shape: {"error": {"message", "type", "param", "code"}}. The server's bearer token and limits apply
as on /generate.
"""

# no `from __future__ import annotations`: FastAPI reads the request models' annotations at runtime
import json
import time
import uuid
from typing import Iterator

from components.serving.sampling import sampler

MAX_STOP = 4
# fields that change nothing in the answer: accepted, not used
BOOKKEEPING = frozenset({"user", "metadata", "safety_identifier", "service_tier", "prompt_cache_key",
                         "prompt_cache_options", "prompt_cache_retention"})
# values that ask for what the server does anyway (besides null, false, [] and {})
NEUTRAL = {"tool_choice": ["none"], "function_call": ["none"], "response_format": [{"type": "text"}],
           "modalities": [["text"]], "parallel_tool_calls": [True], "best_of": [1], "top_logprobs": [0]}
WHY = {"tools": "it does not call tools", "tool_choice": "it does not call tools",
       "parallel_tool_calls": "it does not call tools", "functions": "it does not call functions",
       "function_call": "it does not call functions", "tool_calls": "it does not call tools",
       "response_format": "it answers in plain text only", "logprobs": "it returns no log probabilities",
       "top_logprobs": "it returns no log probabilities", "logit_bias": "it does not bias tokens",
       "echo": "it does not echo the prompt", "best_of": "it samples one answer", "suffix": "it does not insert text",
       "store": "it stores no completions"}


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def stop_at(text: str, stops: list[str]) -> int | None:
    """Where the first stop string starts in text, if one is there."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could be the start of a stop string (not shown until it is decided)."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def completion(bundle, ids: list[int], max_tokens: int, temperature: float, top_p: float, seed: int | None,
               stops: list[str], strip: bool) -> Iterator[tuple[str, str | None, int]]:
    """Yield (text delta, None, tokens so far) as the answer grows, then ("", finish_reason, tokens).

    finish_reason: "stop" (EOS or a stop string, which is not included), "length" (max_tokens reached)."""
    decode = bundle.decode if strip else (lambda t: bundle.tokenizer.decode(t, skip_special_tokens=True))
    toks: list[int] = []
    shown, finish = "", None
    for tok in bundle.lm.stream(ids, max_tokens, bundle.eos, sampler(temperature, top_p, seed)):
        toks.append(tok)
        text = decode(toks)
        cut = stop_at(text, stops)
        if cut is not None:
            text, finish = text[:cut], "stop"
        elif stops:
            text = text[: len(text) - held_back(text, stops)]
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown):], None, len(toks)
            shown = text
        if finish:
            break
    if finish is None:
        finish = "length" if len(toks) >= max_tokens else "stop"
        text = decode(toks)
        if text.startswith(shown) and len(text) > len(shown):  # what a possible stop string held back
            yield text[len(shown):], None, len(toks)
    yield "", finish, len(toks)


def is_neutral(key: str, value) -> bool:
    return value is None or value is False or value == [] or value == {} or value in NEUTRAL.get(key, [])


def unsupported(fields: dict, where: str = "") -> tuple[str, str] | None:
    """(param, message) for the first field of `fields` (a request's or a message's unknown fields) that the server
    would otherwise ignore though it asks for something."""
    for key, value in (fields or {}).items():
        if (not where and key in BOOKKEEPING) or is_neutral(key, value):
            continue
        why = f": {WHY[key]}" if key in WHY else ""
        return where + key, (f"Unsupported parameter: '{where + key}' is not supported by this server{why}; leave it "
                             "out (the server refuses what it would otherwise ignore)")
    return None


def add_routes(app, serving: dict, limits, slots, authorised, model_id: str) -> None:
    """Mount the /v1 endpoints on the FastAPI app of components.serving.serve.create_app."""
    from typing import Literal

    from fastapi import Depends, HTTPException
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    from components.prompts.content import ContentError, content_text
    from components.serving.guard import refuse_control_tokens

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")  # checked by `unsupported`: `name`, `tool_calls`, ...
        role: Literal["system", "user", "assistant"]
        content: str

        @field_validator("content", mode="before")
        @classmethod
        def text_parts(cls, v):
            if isinstance(v, list):  # [{"type": "text", "text": ...}, ...]: the text, joined as the data readers do
                try:
                    return content_text(v)
                except ContentError as e:
                    raise ValueError(e.reason) from None
            return v

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class Common(BaseModel):
        model_config = ConfigDict(extra="allow")  # checked by `unsupported`: refused unless bookkeeping or "off"
        model: str
        max_tokens: int | None = Field(None, ge=1, le=limits.max_new_tokens)
        max_completion_tokens: int | None = Field(None, ge=1, le=limits.max_new_tokens)
        temperature: float = Field(1.0, ge=0, le=2)
        top_p: float = Field(1.0, gt=0, le=1)
        seed: int | None = None
        stop: str | list[str] | None = Field(None, validate_default=True)  # a list after validation
        n: int = 1
        stream: bool = False
        stream_options: StreamOptions | None = None
        frequency_penalty: float = 0.0
        presence_penalty: float = 0.0

        @field_validator("n")
        @classmethod
        def one(cls, v: int) -> int:
            if v != 1:
                raise ValueError("only n=1 is supported")
            return v

        @field_validator("frequency_penalty", "presence_penalty")
        @classmethod
        def no_penalty(cls, v: float) -> float:
            if v != 0:
                raise ValueError("penalties are not supported (only 0)")
            return v

        @field_validator("stop")
        @classmethod
        def few_stops(cls, v):
            stops = [v] if isinstance(v, str) else list(v or [])
            if len(stops) > MAX_STOP or any(not s for s in stops):
                raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings")
            return stops

        def budget(self, bundle) -> int:
            return self.max_completion_tokens or self.max_tokens or min(bundle.gen["max_new_tokens"], limits.max_new_tokens)

    class ChatRequest(Common):
        messages: list[Message] = Field(min_length=1)

        @model_validator(mode="after")
        def ends_with_user(self):
            if self.messages[-1].role != "user":
                raise ValueError("messages must end with a user turn")
            if sum(len(m.content) for m in self.messages) > limits.max_prompt_chars:
                raise ValueError(f"messages hold more than {limits.max_prompt_chars} characters")
            return self

    class CompletionRequest(Common):
        prompt: str = Field(min_length=1, max_length=limits.max_prompt_chars)

    def checked(bundle, req: Common) -> None:
        hits = [unsupported(req.model_extra)]
        hits += [unsupported(m.model_extra, f"messages[{i}].") for i, m in enumerate(getattr(req, "messages", []))]
        hit = next((h for h in hits if h), None)
        if hit:
            raise HTTPException(400, error_body(hit[1], hit[0], "unsupported_parameter"))
        if req.model != model_id:
            raise HTTPException(404, error_body(f"The model '{req.model}' does not exist; this server serves "
                                                f"'{model_id}' (GET /v1/models)", "model", "model_not_found"))

    def too_long(ids: list[int]) -> None:
        if len(ids) > limits.max_prompt_tokens:
            raise HTTPException(400, error_body(f"the prompt is {len(ids)} tokens; the limit is {limits.max_prompt_tokens}",
                                                "messages", "context_length_exceeded"))

    def respond(req: Common, ids: list[int], bundle, chat: bool):
        kind, rid = ("chat.completion", f"chatcmpl-{uuid.uuid4().hex}") if chat else ("text_completion", f"cmpl-{uuid.uuid4().hex}")
        created, n = int(time.time()), req.budget(bundle)
        steps = completion(bundle, ids, n, req.temperature, req.top_p, req.seed, req.stop, strip=chat)

        def usage(done: int) -> dict:
            return {"prompt_tokens": len(ids), "completion_tokens": done, "total_tokens": len(ids) + done}

        def choice(text: str, finish: str | None, first: bool = False) -> dict:
            if not chat:
                return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            delta = ({"role": "assistant"} if first else {}) | ({"content": text} if text or first else {})
            return {"index": 0, "delta": delta, "finish_reason": finish}

        if req.stream:
            def events():
                base = {"id": rid, "object": f"{kind}.chunk" if chat else kind, "created": created, "model": model_id}
                with slots:
                    first = True
                    for text, finish, done in steps:
                        if text or first or finish:
                            chunk = {**base, "choices": [choice(text, finish, first and chat)]}
                            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                            first = False
                    if req.stream_options and req.stream_options.include_usage:
                        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage(done)})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        with slots:
            parts, finish, done = [], None, 0
            for text, finish, done in steps:
                parts.append(text)
        text = "".join(parts)
        body = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish} if chat else \
            {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return {"id": rid, "object": kind, "created": created, "model": model_id, "choices": [body], "usage": usage(done)}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "peftpipe"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    def chat_completions(req: ChatRequest):
        from components.methods.icl import prompt_ids

        bundle = serving["bundle"]
        checked(bundle, req)
        for i, m in enumerate(req.messages):
            refuse_control_tokens(bundle, {f"messages[{i}].content": m.content})
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        ids = prompt_ids(bundle.tokenizer, messages, bundle.shots, bundle.gen.get("system_prompt"))
        too_long(ids)
        return respond(req, ids, bundle, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorised)])
    def completions(req: CompletionRequest):
        bundle = serving["bundle"]
        checked(bundle, req)
        refuse_control_tokens(bundle, {"prompt": req.prompt})
        from components.prompts.chat import encode_text

        ids = encode_text(bundle.tokenizer, req.prompt)  # raw text: BOS where the model's tokenizer adds it
        too_long(ids)
        return respond(req, ids, bundle, chat=False)


def openai_errors(app) -> None:
    """Errors on /v1 paths in OpenAI's shape (400 for a bad request, as OpenAI answers); others as FastAPI does."""
    from fastapi import HTTPException
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    def is_v1(request) -> bool:
        return request.url.path.startswith("/v1/")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        if not is_v1(request):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        param = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in first.get("loc", ())[1:]).lstrip(".") or None
        msg = first["msg"].removeprefix("Value error, ")
        return JSONResponse(error_body(f"{param + ': ' if param else ''}{msg}", param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        if not is_v1(request):
            return await http_exception_handler(request, exc)
        detail = exc.detail
        if isinstance(detail, dict) and "error" in detail:
            body = detail
        elif isinstance(detail, list) and detail and isinstance(detail[0], dict):  # a refusal naming its field
            body = error_body(detail[0].get("msg", "invalid request"), ".".join(map(str, detail[0].get("loc", [])[1:])))
        else:
            code = "invalid_api_key" if exc.status_code == 401 else None
            body = error_body(str(detail), None, code)
        status = 400 if exc.status_code == 422 else exc.status_code
        return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))
