"""`peftpipe serve`: an HTTP service over a bundle (FastAPI + ONNX Runtime).

POST /generate  {"prompt": str, "max_new_tokens": int?, "stream": bool?} -> {"text", "tokens", ...}
                (with "stream": true, the answer's text arrives in chunks as it is generated)
GET  /v1/models, POST /v1/chat/completions, POST /v1/completions: the OpenAI API (openai_api.py)
GET  /health    liveness and the bundle it serves
GET  /metadata  base model, method, metrics, gate verdict and parity results from the model card

Each request decodes with its own KV cache (ONNX Runtime sessions are safe to run from several
threads), so concurrent requests cannot see each other's state; at most `parallel` decode at once
and the rest wait their turn. With a token set, every endpoint but /health needs
`Authorization: Bearer <token>`; the token is never logged.
"""


import hmac
import threading
import time
from dataclasses import dataclass


@dataclass
class ServeLimits:
    max_prompt_chars: int = 4000
    max_prompt_tokens: int = 1024
    max_new_tokens: int = 256  # the most a request may ask for
    parallel: int = 2  # decodes running at once (the rest queue)


def create_app(bundle, limits: ServeLimits | None = None, token: str | None = None, model_id: str | None = None):
    """The FastAPI app for a loaded `components.bundle.loader.Bundle`.

    `app.state.swap(new_bundle)` replaces the bundle for later requests (requests in flight finish
    on the one they started with)."""
    from fastapi import Depends, FastAPI, HTTPException, Request

    from components.serving.guard import refuse_control_tokens
    from components.serving.openai_api import add_routes, openai_errors
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    limits = limits or ServeLimits()
    slots = threading.BoundedSemaphore(limits.parallel)

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prompt: str = Field(min_length=1, max_length=limits.max_prompt_chars)
        max_new_tokens: int | None = Field(default=None, ge=1, le=limits.max_new_tokens)
        stream: bool = False

        @field_validator("prompt")
        @classmethod
        def not_blank(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("prompt is empty or whitespace")
            return v

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="peftpipe", description="Answers questions with a peftpipe bundle.")
    serving = {"bundle": bundle}
    app.state.swap = lambda new: serving.update(bundle=new)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "method": serving["bundle"].card.get("method")}

    @app.get("/metadata", dependencies=[Depends(authorised)])
    def metadata() -> dict:
        return {**serving["bundle"].metadata(), "limits": limits.__dict__}

    @app.post("/generate", dependencies=[Depends(authorised)])
    def generate(req: GenerateRequest):
        bundle = serving["bundle"]  # this request's bundle, even if a promotion swaps it meanwhile
        refuse_control_tokens(bundle, {"prompt": req.prompt})
        ids = bundle.prompt_ids(req.prompt)
        if len(ids) > limits.max_prompt_tokens:
            raise HTTPException(413, f"prompt is {len(ids)} tokens; the limit is {limits.max_prompt_tokens}")
        n = req.max_new_tokens or min(bundle.gen["max_new_tokens"], limits.max_new_tokens)
        if req.stream:
            def chunks():
                with slots:
                    yield from bundle.stream(req.prompt, n)

            return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")
        t0 = time.perf_counter()
        with slots:
            tokens = bundle.lm.generate(ids, n, bundle.eos)
        seconds = time.perf_counter() - t0
        return {"text": bundle.decode(tokens), "tokens": len(tokens), "prompt_tokens": len(ids),
                "finish_reason": "length" if len(tokens) >= n else "stop", "seconds": round(seconds, 4)}

    add_routes(app, serving, limits, slots, authorised, model_id or default_model_id(bundle))
    openai_errors(app)
    return app


def default_model_id(bundle) -> str:
    """The id /v1/models reports: the registry name when the bundle came from the registry, else peftpipe-<method>."""
    return bundle.card.get("registry_name") or f"peftpipe-{bundle.card.get('method') or 'model'}"


def serve(bundle_dir: str, host: str, port: int, limits: ServeLimits, token: str | None, threads: int = 0,
          variant: str = "auto", registry: dict | None = None, follow_s: float = 0, model_id: str | None = None) -> None:
    """Serve a bundle; with `registry` ({root, name, version, stage, deploy_dir}) and `follow_s` > 0, poll the
    registry and switch to whatever version the stage holds (after a promotion or a rollback)."""
    import uvicorn

    from components.bundle.loader import Bundle

    bundle = Bundle(bundle_dir, threads, variant)
    if registry:
        bundle.registry = {k: registry[k] for k in ("name", "version", "stage")}
        print(f"{registry['stage']}: {registry['name']} {registry['version']}", flush=True)
    print(f"serving {bundle_dir} ({bundle.card.get('method')}, {bundle.variant}) on http://{host}:{port}"
          f"{' (bearer token required)' if token else ''}", flush=True)
    model_id = model_id or (registry["name"] if registry else None)
    app = create_app(bundle, limits, token, model_id)
    print(f"OpenAI-compatible API: http://{host}:{port}/v1 (model {model_id or default_model_id(bundle)!r})", flush=True)
    if registry and follow_s > 0:
        threading.Thread(target=_follow, args=(app, registry, follow_s, threads, variant), daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _follow(app, registry: dict, every_s: float, threads: int, variant: str) -> None:
    """Poll the registry; when the stage holds another version, load it (checksums verified) and swap."""
    from pathlib import Path

    from components.release import registry as reg
    from components.bundle.loader import Bundle

    serving = registry["version"]
    while True:
        time.sleep(every_s)
        try:
            now = reg.current(Path(registry["root"]), registry["name"], registry["stage"])
            if now is None or now == serving:
                continue
            folder = reg.materialise(Path(registry["root"]), registry["name"], now, registry["deploy_dir"])
            new = Bundle(folder, threads, variant)
            new.registry = {"name": registry["name"], "version": now, "stage": registry["stage"]}
            app.state.swap(new)
            print(f"{registry['stage']} is now {registry['name']} {now}: serving {folder}", flush=True)
            serving = now
        except Exception as e:  # keep serving the current version; say why the switch failed
            print(f"registry poll failed, still serving {serving}: {type(e).__name__}: {e}", flush=True)
