"""`peftpipe serve` under load: N concurrent clients on loopback for T seconds, in one run.

    python benchmarks/serve_load.py --bundle bundle                    # 50 clients, 30 s
    python benchmarks/serve_load.py --bundle bundle --clients 100 --seconds 60

Starts the server as its own process (with a bearer token), computes each question's expected
answer one at a time first, then checks every answer under load against it (cross-talk would show
up as a wrong answer). Writes docs/benchmarks/serve_load.{json,md}: requests/s, 4xx/5xx/transport
errors, wrong answers, latency percentiles.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from common import env_block, markdown_table, write_json  # noqa: E402

QUESTIONS = ["What is the capital of Peru?", "Who wrote Hamlet?", "What is the boiling point of water?",
             "How many legs does a spider have?", "What is the largest planet?", "What gas do plants take in?",
             "Who painted the Mona Lisa?", "What is the chemical symbol for gold?"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--variant", default="auto")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)

    import httpx

    from components.serving.load_test import run_load, wait_until_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "PEFTPIPE_SERVE_TOKEN": token}
    server = subprocess.Popen([sys.executable, "-m", "peftpipe.cli", "serve", "--bundle", args.bundle, "--port", str(port),
                               "--parallel", str(args.parallel), "--variant", args.variant, "--require-token"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_healthy(url, 240):
            raise SystemExit(f"the server at {url} did not start")
        headers = {"Authorization": f"Bearer {token}"}
        meta = httpx.get(url + "/metadata", headers=headers).json()
        expected = {q: httpx.post(url + "/generate", json={"prompt": q, "max_new_tokens": args.max_new_tokens},
                                  headers=headers, timeout=120).json()["text"] for q in QUESTIONS}
        stats = run_load(url, expected, args.clients, args.seconds, token, args.max_new_tokens)
    finally:
        server.terminate()
        server.wait(timeout=60)
    command = "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"benchmark": "serve_load", "command": command.strip(), "env": env_block(os.cpu_count()),
              "config": {**vars(args), "method": meta.get("method"), "served_variant": meta.get("variant")},
              "results": stats,
              "ratios": {"ok_fraction": round(stats["ok"] / max(stats["requests"], 1), 4),
                         "p99_over_p50": round(stats["latency_s"]["p99"] / stats["latency_s"]["p50"], 2)
                         if stats["latency_s"]["p50"] else None}}
    out = Path(args.out)
    write_json(out / "serve_load.json", report)
    lat = stats["latency_s"]
    table = markdown_table(["clients", "seconds", "requests", "req/s", "ok", "4xx", "5xx", "transport errors",
                            "wrong answers", "p50 s", "p90 s", "p99 s", "max s"],
                           [[stats["clients"], stats["seconds"], stats["requests"], stats["requests_per_s"], stats["ok"],
                             stats["status_4xx"], stats["status_5xx"], stats["transport_errors"], stats["wrong_answers"],
                             lat["p50"], lat["p90"], lat["p99"], lat["max"]]])
    (out / "serve_load.md").write_text(
        f"# Server under load\n\nCommand: `{report['command']}`\n\nBundle `{args.bundle}` ({meta.get('method')}, "
        f"{meta.get('variant')}), {args.parallel} decodes at once, up to {args.max_new_tokens} new tokens per answer, "
        f"every answer checked against the one given without load.\n\n{table}\n")
    print(table)
    return 0 if stats["status_5xx"] == 0 and stats["wrong_answers"] == 0 and stats["transport_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
