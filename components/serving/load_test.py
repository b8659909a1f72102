"""A bounded load test for `peftpipe serve`: N concurrent clients for T seconds on loopback.

Each client sends questions from a list and checks every answer against the one expected for that
question (computed beforehand, one at a time), so cross-talk between concurrent requests shows up
as a wrong answer, not only as an error. Used by tests/unit/serving/test_serve.py and benchmarks/serve_load.py.
"""

from __future__ import annotations

import threading
import time


def wait_until_healthy(url: str, timeout: float = 120.0) -> bool:
    """Poll GET {url}/health until it answers 200 (True) or the timeout passes (False)."""
    import httpx

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def run_load(url: str, expected: dict[str, str], clients: int = 50, seconds: float = 30.0,
             token: str | None = None, max_new_tokens: int | None = None, timeout: float = 120.0) -> dict:
    """Hammer POST {url}/generate; return counts (ok, 4xx, 5xx, errors, wrong answers) and latency percentiles."""
    import httpx

    questions = list(expected)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    lock = threading.Lock()
    stats = {"ok": 0, "status_4xx": 0, "status_5xx": 0, "transport_errors": 0, "wrong_answers": 0}
    latencies: list[float] = []
    examples: list[str] = []
    start = threading.Barrier(clients)
    deadline = [0.0]

    def client(k: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as http:
            start.wait()
            i = k
            while time.perf_counter() < deadline[0]:
                q = questions[i % len(questions)]
                i += 1
                body = {"prompt": q} | ({"max_new_tokens": max_new_tokens} if max_new_tokens else {})
                t0 = time.perf_counter()
                try:
                    r = http.post("/generate", json=body)
                except httpx.HTTPError as e:
                    with lock:
                        stats["transport_errors"] += 1
                        examples.append(f"{type(e).__name__}: {e}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code >= 500:
                        stats["status_5xx"] += 1
                        examples.append(f"{r.status_code}: {r.text[:200]}")
                    elif r.status_code >= 400:
                        stats["status_4xx"] += 1
                        examples.append(f"{r.status_code}: {r.text[:200]}")
                    elif r.json()["text"] != expected[q]:
                        stats["wrong_answers"] += 1
                        examples.append(f"wrong answer to {q!r}: {r.json()['text']!r}")
                    else:
                        stats["ok"] += 1
                        latencies.append(dt)

    deadline[0] = time.perf_counter() + seconds + 5  # provisional, reset once all clients are connected
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {**stats, "clients": clients, "seconds": round(wall, 2), "requests": sum(stats.values()),
            "requests_per_s": round(sum(stats.values()) / wall, 2),
            "latency_s": {f"p{q}": round(percentile(latencies, q), 4) if latencies else None for q in (50, 90, 95, 99)}
            | {"max": round(max(latencies), 4) if latencies else None},
            "examples": examples[:5]}
