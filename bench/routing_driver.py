"""Prefix-aware routing benchmark driver (bench/routing.sh starts the sims and the Engine).

Open-loop load at --rate requests/s for --seconds: many tenants, each with a long shared system
prompt and short unique questions; a skewed mix (tenant 0 takes --hot of the traffic); a share of
multi-turn sessions (the conversation so far is resent with the next question). Every request is
streamed; TTFT is the client's time to the first content event. Prints one JSON line of results:
the sims' own prefix hit rate (vllm:prefix_cache_hits_total ÷ queries, deltas), TTFT p50/p90,
requests per replica (max/mean, from X-Routed-Backend), and the Engine's CPU per request (its
process tree, from /proc)."""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(__file__))
import proctree  # noqa: E402


def metric(url: str, name: str) -> float:
    text = requests.get(url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def system_prompt(t: int, chars: int) -> str:
    words = [f"rule{t}_{i}" for i in range(chars // 8 + 1)]
    return (f"You are the assistant of tenant {t}. " + " ".join(words))[:chars]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--sims", required=True, help="comma-separated sim URLs")
    ap.add_argument("--engine-pid", type=int, required=True)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--tenants", type=int, default=40)
    ap.add_argument("--system-chars", type=int, default=6000)
    ap.add_argument("--hot", type=float, default=0.25)
    ap.add_argument("--sessions", type=float, default=0.2, help="share of requests continuing a session")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--label", default="")
    ap.add_argument("--warmup-seconds", type=float, default=0,
                    help="send at the same rate for this long first, uncounted (each tenant's cold first prefills)")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    sims = a.sims.split(",")
    systems = [system_prompt(t, a.system_chars) for t in range(a.tenants)]
    sessions: dict[int, list] = {}
    lock = threading.Lock()
    ttft: list[float] = []
    routed: dict[str, int] = {}
    errors = [0]

    before = {s: (metric(s, "vllm:prefix_cache_queries_total"), metric(s, "vllm:prefix_cache_hits_total")) for s in sims}
    cpu0 = proctree.cpu_ticks(proctree.tree([a.engine_pid])) if hasattr(proctree, "cpu_ticks") else None

    def one(i: int, tenant: int, messages: list, counted: bool = True) -> None:
        body = {"messages": messages, "max_tokens": a.max_tokens, "stream": True}
        t0 = time.monotonic()
        try:
            with requests.post(a.engine + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
                if r.status_code != 200:
                    with lock:
                        errors[0] += 1
                    return
                first = None
                for line in r.iter_lines():
                    if first is None and line.startswith(b"data: {"):
                        first = time.monotonic() - t0
                if not counted:
                    return
                with lock:
                    if first is not None:
                        ttft.append(first)
                    b = r.headers.get("x-routed-backend", "?")
                    routed[b] = routed.get(b, 0) + 1
        except requests.RequestException:
            with lock:
                errors[0] += counted

    def pick_tenant() -> int:
        if rng.random() < a.hot:
            return 0
        return 1 + rng.randrange(a.tenants - 1)

    warm = int(a.rate * a.warmup_seconds)
    n = int(a.rate * a.seconds)
    start = time.monotonic()
    t_next = start
    with ThreadPoolExecutor(max_workers=512) as ex:
        for i in range(warm + n):
            if i == warm and warm:
                before = {s: (metric(s, "vllm:prefix_cache_queries_total"), metric(s, "vllm:prefix_cache_hits_total")) for s in sims}
                cpu0 = proctree.cpu_ticks(proctree.tree([a.engine_pid])) if cpu0 is not None else None
                start = time.monotonic()
            t_next += rng.expovariate(a.rate)
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            tenant = pick_tenant()
            if rng.random() < a.sessions and tenant in sessions and len(sessions[tenant]) < 12:
                msgs = sessions[tenant] + [{"role": "user", "content": f"and then {i}?"}]
            else:
                msgs = [{"role": "system", "content": systems[tenant]}, {"role": "user", "content": f"question {i} of tenant {tenant}?"}]
            sessions[tenant] = msgs + [{"role": "assistant", "content": f"answer {i}"}]
            ex.submit(one, i, tenant, msgs, i >= warm)
    elapsed = time.monotonic() - start

    after = {s: (metric(s, "vllm:prefix_cache_queries_total"), metric(s, "vllm:prefix_cache_hits_total")) for s in sims}
    q = sum(after[s][0] - before[s][0] for s in sims)
    h = sum(after[s][1] - before[s][1] for s in sims)
    cpu1 = proctree.cpu_ticks(proctree.tree([a.engine_pid])) if cpu0 is not None else None
    done = len(ttft)
    per = [routed.get(s, 0) for s in sims]
    mean = sum(per) / len(per) if per else 0
    ttft.sort()
    out = {
        "label": a.label, "rate": a.rate, "requests": n, "ok": done, "errors": errors[0], "seconds": round(elapsed, 1),
        "sim_prefix_hit_rate": round(h / q, 3) if q else 0,
        "ttft_p50_ms": round(1000 * ttft[len(ttft) // 2], 1) if ttft else None,
        "ttft_p90_ms": round(1000 * ttft[int(len(ttft) * 0.9)], 1) if ttft else None,
        "per_replica": per, "max_over_mean": round(max(per) / mean, 2) if mean else None,
        "engine_cpu_us_per_request": round((cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, n), 1) if cpu1 is not None else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
