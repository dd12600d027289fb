"""Fair admission benchmark driver (issue 14; bench/fairness.sh runs it).

For each policy (fifo, fair): a vllm-sim with a small KV cache (so a flood crosses the soft limit),
the Engine in front (admission on, tenant header x-tenant, admission_control.max_inflight_per_backend
= CAP, the sim sized to run CAP requests at once), first the light tenant alone (its demand and its
latency alone), then a flood: tenant "heavy" with HEAVY closed-loop clients (max_tokens 8-56, 32 on
average: real requests vary, and equal lengths keep the slots in lockstep) and tenant "light" with
LIGHT clients (32 tokens), SECONDS long. Reports per tenant the request latency p50/p99 (what the
client sees) and the queue wait p50/p99 (latency minus the sim's service time, ttft 0 + (tokens - 1)
x ITL), requests and completion tokens served; Jain's index over the tenants' throughput as a
fraction of their max-min fair share (light: its demand alone; heavy: the rest; 1 = each got its
fair share), the older per-client index, and the Engine's CPU per request (its process tree, /proc).
CAP=0 runs without the cap (the KV gauge alone; the sim then gets --kv-blocks 64 as before, or
SIM_BLOCKS).
One JSON line per policy."""
from __future__ import annotations

import json
import random
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
CAP = int(os.environ.get("CAP", "6"))
ITL = 0.015


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None


def run(policy: str) -> dict:
    # 7 prompt tokens + up to 56: at most 4 blocks of 16 a request; two blocks of slack.
    blocks = int(os.environ.get("SIM_BLOCKS", "0")) or (CAP * 4 + 2 if CAP else 64)
    sim = harness.start_sim("--kv-blocks", blocks, "--block-size", 16, "--itl-ms", int(ITL * 1000),
                            "--max-num-seqs", 64)
    ac = {"enabled": True, "soft_limit": 0.95 if CAP else 0.7, "hard_limit": 0.99,
          "poll_interval_seconds": 0.05, "max_wait_seconds": 60, "max_queue": 1000, "fairness": policy,
          "tenant_header": "x-tenant", "tenants": [{"name": "heavy"}, {"name": "light"}],
          "max_inflight_per_backend": CAP}
    cfg = harness.make_config([sim], server={"workers": WORKERS}, cache={"enabled": False}, admission_control=ac)
    eng = harness.start_engine(cfg)
    try:
        harness.wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
        results: dict[str, list] = {"heavy": [], "light": []}
        alone: dict[str, list] = {"light": []}
        end = 0.0

        def client(tenant: str, into: dict):
            s = requests.Session()
            while time.monotonic() < end:
                n = random.randint(8, 56) if tenant == "heavy" else 32
                body = {"model": harness.SIM_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": n, "temperature": 0.7}
                t0 = time.monotonic()
                r = s.post(eng.url + "/v1/chat/completions", json=body, headers={"x-tenant": tenant}, timeout=120)
                tok = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
                into[tenant].append((time.monotonic() - t0, r.status_code, tok))

        end = time.monotonic() + 4.0
        ts = [threading.Thread(target=client, args=("light", alone)) for _ in range(LIGHT)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        light_alone_tps = sum(x[2] for x in alone["light"] if x[1] == 200) / 4.0
        light_alone_p99 = pct([x[0] for x in alone["light"] if x[1] == 200], 0.99)
        end = time.monotonic() + SECONDS

        tick = os.sysconf("SC_CLK_TCK")
        pids = proctree.tree([eng.pid])
        cpu0 = proctree.cpu_ticks(pids) / tick
        ts = [threading.Thread(target=client, args=("heavy", results)) for _ in range(HEAVY)]
        ts += [threading.Thread(target=client, args=("light", results)) for _ in range(LIGHT)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        cpu1 = proctree.cpu_ticks(pids) / tick
        out = {"policy": policy, "seconds": SECONDS, "sim_kv_blocks": blocks, "heavy_clients": HEAVY, "light_clients": LIGHT, "workers": WORKERS,
               "cap": CAP, "light_alone_p99_s": round(light_alone_p99, 3), "light_alone_tokens_per_s": round(light_alone_tps, 1)}
        thr = {}
        total = 0
        for tenant, rs in results.items():
            ok = [x for x in rs if x[1] == 200]
            lat = [x[0] for x in ok]
            total += len(rs)
            thr[tenant] = sum(x[2] for x in ok) / SECONDS
            wait = [max(0.0, x[0] - (x[2] - 1) * ITL) for x in ok]
            out[tenant] = {"requests": len(ok), "errors": len(rs) - len(ok), "tokens_per_s": round(thr[tenant], 1),
                           "p50_s": round(pct(lat, 0.5), 3) if lat else None, "p99_s": round(pct(lat, 0.99), 3) if lat else None,
                           "wait_p50_s": round(pct(wait, 0.5), 3) if wait else None,
                           "wait_p99_s": round(pct(wait, 0.99), 3) if wait else None}
        # Jain's index over throughput per client (each client asks for the same rate: a fair
        # share is the same tokens per client whatever its tenant).
        # Max-min fair shares: the light tenant asks less than half, so its share is its demand
        # alone; the heavy one's is the rest of what was served.
        total_tps = thr["heavy"] + thr["light"]
        share_light = min(light_alone_tps, total_tps / 2)
        x = [thr["light"] / share_light, thr["heavy"] / (total_tps - share_light)]
        out["jain_maxmin"] = round(sum(x) ** 2 / (len(x) * sum(v * v for v in x)), 3)
        out["light_share_of_demand"] = round(x[0], 3)
        per_client = [thr["heavy"] / HEAVY, thr["light"] / LIGHT]
        out["jain_per_client"] = round(sum(per_client) ** 2 / (len(per_client) * sum(x * x for x in per_client)), 3)
        st = sim.stats()
        out["sim_max_running_seen"] = st.get("max_running_seen")
        if cpu1 is not None:
            out["engine_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / max(total, 1), 3)
        return out
    finally:
        eng.stop()
        sim.stop()


if __name__ == "__main__":
    for p in sys.argv[1:] or ["fifo", "fair"]:
        print(json.dumps(run(p)), flush=True)
