"""Fair admission benchmark driver (issue 14; bench/fairness.sh runs it).

For each policy (fifo, fair): a vllm-sim with a small KV cache (so a flood crosses the soft limit),
the Engine in front (admission on, tenant header x-tenant), then a flood: tenant "heavy" with
HEAVY closed-loop clients and tenant "light" with LIGHT clients, SECONDS long. Reports per tenant
the request latency p50/p99 (queue wait included: it is the latency the client sees), requests and
completion tokens served, Jain's fairness index over the tenants' throughput normalised by their
demand share (1 = each got what it asked in proportion), and the Engine's CPU per request (its
process tree, /proc) for the admission path. One JSON line per policy."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "Tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import proctree  # noqa: E402

SECONDS = float(os.environ.get("SECONDS_PER_RUN", "15"))
HEAVY = int(os.environ.get("HEAVY", "20"))
LIGHT = int(os.environ.get("LIGHT", "2"))
WORKERS = int(os.environ.get("WORKERS", "1"))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None


def run(policy: str) -> dict:
    sim = harness.start_sim("--kv-blocks", 64, "--block-size", 16, "--itl-ms", 15, "--max-num-seqs", 64)
    cfg = harness.make_config([sim], server={"workers": WORKERS}, cache={"enabled": False},
                              admission_control={"enabled": True, "soft_limit": 0.7, "hard_limit": 0.99,
                                                 "poll_interval_seconds": 0.05, "max_wait_seconds": 60,
                                                 "max_queue": 1000, "fairness": policy, "tenant_header": "x-tenant",
                                                 "tenants": [{"name": "heavy"}, {"name": "light"}]})
    eng = harness.start_engine(cfg)
    try:
        harness.wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
        results: dict[str, list] = {"heavy": [], "light": []}
        end = time.monotonic() + SECONDS

        def client(tenant: str):
            s = requests.Session()
            body = {"model": harness.SIM_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32, "temperature": 0.7}
            while time.monotonic() < end:
                t0 = time.monotonic()
                r = s.post(eng.url + "/v1/chat/completions", json=body, headers={"x-tenant": tenant}, timeout=120)
                tok = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
                results[tenant].append((time.monotonic() - t0, r.status_code, tok))

        tick = os.sysconf("SC_CLK_TCK")
        pids = proctree.tree([eng.pid])
        cpu0 = proctree.cpu_ticks(pids) / tick
        ts = [threading.Thread(target=client, args=("heavy",)) for _ in range(HEAVY)]
        ts += [threading.Thread(target=client, args=("light",)) for _ in range(LIGHT)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        cpu1 = proctree.cpu_ticks(pids) / tick
        out = {"policy": policy, "seconds": SECONDS, "heavy_clients": HEAVY, "light_clients": LIGHT, "workers": WORKERS}
        thr = {}
        total = 0
        for tenant, rs in results.items():
            ok = [x for x in rs if x[1] == 200]
            lat = [x[0] for x in ok]
            total += len(rs)
            thr[tenant] = sum(x[2] for x in ok) / SECONDS
            out[tenant] = {"requests": len(ok), "errors": len(rs) - len(ok), "tokens_per_s": round(thr[tenant], 1),
                           "p50_s": round(pct(lat, 0.5), 3) if lat else None, "p99_s": round(pct(lat, 0.99), 3) if lat else None}
        # Jain's index over throughput per client (each client asks for the same rate: a fair
        # share is the same tokens per client whatever its tenant).
        per_client = [thr["heavy"] / HEAVY, thr["light"] / LIGHT]
        out["jain_per_client"] = round(sum(per_client) ** 2 / (len(per_client) * sum(x * x for x in per_client)), 3)
        if cpu1 is not None:
            out["engine_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / max(total, 1), 3)
        return out
    finally:
        eng.stop()
        sim.stop()


if __name__ == "__main__":
    for p in sys.argv[1:] or ["fifo", "fair"]:
        print(json.dumps(run(p)), flush=True)
