"""peftpipe generate, peftpipe serve: answer questions from an exported bundle, on the terminal or over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

from peftpipe.cli import _fail
from peftpipe.cli.common import VARIANT_HELP, VARIANTS, missing_bundle, registry_ctx


def cmd_generate(args) -> int:
    from components.bundle.loader import Bundle

    if (code := missing_bundle(args.bundle)) is not None:
        return code
    bundle = Bundle(args.bundle, variant=args.variant)
    for q in args.question:
        if len(args.question) > 1:
            print(f"Q: {q}\nA: ", end="", flush=True)
        if args.no_stream:
            print(bundle.answer(q, args.max_new_tokens))
            continue
        for piece in bundle.stream(q, args.max_new_tokens):
            print(piece, end="", flush=True)
        print()
    return 0


def cmd_serve(args) -> int:
    from components.serving.serve import ServeLimits, serve

    release = None
    if args.bundle is None:  # whatever the registry has in the stage (production by default)
        from flows.releasing import deployed_bundle

        args.bundle, release = deployed_bundle(Path("."), registry_ctx(), args.stage)
    if (code := missing_bundle(args.bundle)) is not None:
        return code
    token = os.environ.get(args.token_env) or None
    if args.require_token and not token:
        return _fail(f"--require-token: set the token in the environment variable {args.token_env}", 2)
    limits = ServeLimits(max_prompt_chars=args.max_prompt_chars, max_prompt_tokens=args.max_prompt_tokens,
                         max_new_tokens=args.max_new_tokens_limit, parallel=args.parallel)
    serve(args.bundle, args.host, args.port, limits, token, args.threads, args.variant, release, args.follow,
          args.model_id)
    return 0


def register(sub) -> None:
    g = sub.add_parser("generate", help="answer questions with ONNX Runtime from an exported bundle")
    g.add_argument("--bundle", required=True, help="bundle directory written by the export stage")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--no-stream", action="store_true", help="print each answer when complete")
    g.add_argument("--variant", default="auto", choices=VARIANTS, help=VARIANT_HELP)
    g.add_argument("question", nargs="+")
    g.set_defaults(func=cmd_generate)

    sv = sub.add_parser("serve", help="HTTP service over a bundle: POST /generate, GET /health, GET /metadata, "
                                       "and the OpenAI API (/v1/models, /v1/chat/completions, /v1/completions)")
    sv.add_argument("--bundle", help="bundle directory written by the export stage (default: the registry's --stage version)")
    sv.add_argument("--stage", default="production", choices=["production", "staging"],
                    help="without --bundle: serve the version the registry has in this stage")
    sv.add_argument("--follow", type=float, default=10.0, metavar="SECONDS",
                    help="without --bundle: check the registry this often and switch to a newly promoted or "
                         "rolled-back version (0: never)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token-env", default="PEFTPIPE_SERVE_TOKEN",
                    help="environment variable holding the bearer token (when set, requests must send it)")
    sv.add_argument("--require-token", action="store_true", help="refuse to start without a token")
    sv.add_argument("--max-new-tokens-limit", type=int, default=256, help="the most new tokens a request may ask for")
    sv.add_argument("--max-prompt-chars", type=int, default=4000)
    sv.add_argument("--max-prompt-tokens", type=int, default=1024)
    sv.add_argument("--parallel", type=int, default=2, help="requests decoding at once; the rest queue")
    sv.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per decode (0: its default)")
    sv.add_argument("--variant", default="auto", choices=VARIANTS, help=VARIANT_HELP)
    sv.add_argument("--model-id", help="the model name the OpenAI API (/v1) reports and accepts "
                                       "(default: the registry name, else peftpipe-<method>)")
    sv.set_defaults(func=cmd_serve)
