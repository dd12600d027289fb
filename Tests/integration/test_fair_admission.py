"""Issue 14 end to end: fair admission across tenants under KV pressure (the simulator's real KV
accounting: small --kv-blocks, so a flood pushes usage past the soft limit), deadlines, and
token/request budgets shared across worker processes through Redis."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
import requests

from harness import chat_body, make_config, metric_value, wait_until

# Small KV cache: each request holds ~3 blocks at its longest (prompt + 32 tokens, 16 per block),
# so ~15 running requests reach the soft limit; 32 tokens at 15 ms each ≈ 0.5 s per request.
PRESSURE = ("--kv-blocks", 64, "--block-size", 16, "--itl-ms", 15, "--max-num-seqs", 64)


def flood_config(sim, tenants, workers=None, **ac_over):
    ac = {"enabled": True, "soft_limit": 0.7, "hard_limit": 0.99, "poll_interval_seconds": 0.05,
          "max_wait_seconds": 60, "max_queue": 1000, "tenant_header": "x-tenant", "tenants": tenants}
    ac.update(ac_over)
    server = {"workers": workers} if workers is not None else {}
    return make_config([sim], admission_control=ac, server=server, cache={"enabled": False})


def body(max_tokens=32):
    b = chat_body()
    b["max_tokens"] = max_tokens
    b["temperature"] = 0.7
    return b


def load(url, tenant, clients, seconds, results, stop_at=None, stream=False, headers=None, tokens=(32, 32)):
    """`clients` closed-loop clients of `tenant` for `seconds`, each request asking for a random
    max_tokens in `tokens`; appends (t_end, latency, status, tokens)."""
    end = time.monotonic() + seconds

    def run():
        s = requests.Session()
        h = {"x-tenant": tenant, **(headers or {})}
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                r = s.post(url + "/v1/chat/completions", json=body(random.randint(*tokens)), headers=h, timeout=60)
                tok = r.json().get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
                results.append((time.monotonic(), time.monotonic() - t0, r.status_code, tok))
            except requests.RequestException:
                results.append((time.monotonic(), time.monotonic() - t0, 0, 0))

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


# "Admission releases only what the backend can start now": a request of the 7-token prompt and
# up to 41 tokens holds ceil((7 + 41) / 16) = 3 blocks at its longest (4 up to 57 tokens), so CAP
# requests fill CAP * 3 blocks; the sim gets two blocks of slack and the Engine's cap (admission_control.max_inflight_per_backend, all
# workers together) is the sim's capacity. Everything beyond waits in the Engine's queue, whose
# order (fair or fifo) then decides who runs; none waits in the sim's own FIFO.
def capped_sim(sim_factory, cap, blocks_per_request=3):
    return sim_factory("--kv-blocks", cap * blocks_per_request + 2, "--block-size", 16, "--itl-ms", 15, "--max-num-seqs", 64)


def capped_config(sim, tenants, cap, workers=None, **over):
    # soft 0.95: the cap, not the (lagging) KV gauge, is what holds work back here.
    return flood_config(sim, tenants, workers=workers, soft_limit=0.95, hard_limit=0.99,
                        max_inflight_per_backend=cap, **over)


# One process: fair queueing is per process, and the bound below is about what one light request
# waits for (the next of CAP slots to free). With two workers each holds CAP / 2 slots, so the wait
# for a slot doubles and p99 comes close to the 2x bound on a loaded machine.
@pytest.mark.parametrize("policy", ["fair", "fifo"])
def test_light_tenant_keeps_its_latency_under_a_10x_flood(sim_factory, engine_factory, policy):
    """The light tenant's latency (queue wait included: 48 tokens take ~0.7 s, its wait alone is ~0)
    stays within 2x of its latency alone under `fair`; under `fifo` (the control: same config but
    the order) it waits behind the flood's queue, ~14 requests at ~12 a second, and does not."""
    cap = 6
    sim = capped_sim(sim_factory, cap, blocks_per_request=4)
    eng = engine_factory(capped_config(sim, [{"name": "heavy"}, {"name": "light"}], cap, workers=1, fairness=policy))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    alone: list = []
    # The light tenant's requests are 48 tokens (~0.7 s): a loaded machine's hiccups are small
    # next to that, while a wait behind the flood's queue (~1.2 s under fifo) is not.
    for t in load(eng.url, "light", 2, 4.0, alone, tokens=(48, 48)):
        t.join()
    base = p99([x[1] for x in alone if x[2] == 200])
    heavy: list = []
    light: list = []
    # The flood's requests vary in length (8-56 tokens, 32 on average), as real ones do: equal
    # lengths would keep the slots in lockstep (six end together every 0.5 s), and the light
    # request's wait for the next end would be anything up to a whole request.
    hs = load(eng.url, "heavy", 20, 10.0, heavy, tokens=(8, 56))
    time.sleep(2.0)  # the flood fills the cap and the queue
    for t in load(eng.url, "light", 2, 6.0, light, tokens=(48, 48)):
        t.join()
    for t in hs:
        t.join()
    ok_light = [x[1] for x in light if x[2] == 200]
    assert len(ok_light) >= 4 and all(x[2] == 200 for x in light), light
    assert any(x[2] == 200 for x in heavy)
    m = eng.metrics_json()["tenants"]
    assert "heavy" in m and "light" in m
    # The flood really queued in the Engine (otherwise this test proves nothing), and the sim
    # never held more than the cap nor queued anything itself.
    assert m["heavy"]["queue_wait_count"] > 0, m
    st = sim.stats()
    assert st["max_running_seen"] <= cap, st
    # Every admitted request's end was counted: nothing is left in flight once the load stops (a
    # leak would wedge a capped backend).
    wait_until(lambda: metric_value(eng.get("/metrics").text, "engine_admission_inflight") == 0, timeout=5,
               what="engine_admission_inflight back to 0")
    flooded = p99(ok_light)
    print(f"{policy}: light p99 alone {base:.3f}s, under the flood {flooded:.3f}s ({flooded / base:.2f}x)", sorted(round(x, 3) for x in ok_light)[-6:], m["light"])
    if policy == "fair":
        assert flooded <= 2 * base, f"light p99 {flooded:.3f}s under the flood vs {base:.3f}s alone"
    else:
        assert flooded > 2 * base, f"fifo: light p99 {flooded:.3f}s under the flood vs {base:.3f}s alone (expected > 2x)"


def test_weights_2_to_1_give_token_throughput_2_to_1(sim_factory, engine_factory):
    """Default workers: each worker holds half the cap and runs its own fair queue; both tenants'
    clients spread over the workers, so each worker serves 2:1 and so does the whole."""
    cap = 12
    # Room in the sim for twice the cap: were the cap not split between the workers (6 + 6), the
    # sim would run more than 12 (checked below).
    sim = capped_sim(sim_factory, cap, blocks_per_request=6)
    eng = engine_factory(capped_config(sim, [{"name": "gold", "weight": 2}, {"name": "bronze", "weight": 1}], cap))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    gold: list = []
    bronze: list = []
    # Each tenant has far more clients than the cap: both stay backlogged in every worker.
    ts = load(eng.url, "gold", 30, 14.0, gold) + load(eng.url, "bronze", 30, 14.0, bronze)
    for t in ts:
        t.join()
    # Both backlogged from 3 s on; count completions in [3, 13] s.
    t0 = min(x[0] - x[1] for x in gold + bronze)
    def tokens(rs):
        return sum(x[3] for x in rs if t0 + 3 <= x[0] <= t0 + 13)
    g, b = tokens(gold), tokens(bronze)
    assert all(x[2] == 200 for x in gold + bronze), [x for x in gold + bronze if x[2] != 200][:5]
    assert b > 0 and g + b >= 100 * 32, (g, b)  # ~24 requests a second ran: the cap was used
    assert sim.stats()["max_running_seen"] <= cap
    print(f"gold {g} tokens, bronze {b}: {g / b:.3f}")
    assert 1.8 <= g / b <= 2.2, f"gold {g} tokens, bronze {b}: ratio {g / b:.2f} {eng.metrics_json()['tenants']}"


def test_a_deadline_the_queue_cannot_meet_is_refused_on_arrival(sim_factory, engine_factory):
    """Expected wait = requests ahead / the queue's drain rate; a deadline shorter than that is
    refused at once (429, Retry-After, no upstream call), a longer one waits and is served."""
    cap = 2
    sim = capped_sim(sim_factory, cap)
    eng = engine_factory(capped_config(sim, [{"name": "heavy"}, {"name": "late"}], cap, workers=1, fairness="fifo"))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    heavy: list = []
    hs = load(eng.url, "heavy", 12, 6.0, heavy)  # 10 queued behind 2 slots of ~0.5 s: ~2.5 s of queue
    time.sleep(2.0)
    t0 = time.monotonic()
    r = requests.post(eng.url + "/v1/chat/completions", json=body(), headers={"x-tenant": "late", "x-request-deadline-ms": "500"}, timeout=10)
    waited = time.monotonic() - t0
    assert r.status_code == 429 and "deadline" in r.json()["error"]["message"], r.text
    assert int(r.headers["retry-after"]) >= 1
    assert waited < 0.25, f"refused after {waited:.3f}s, not on arrival"
    r2 = requests.post(eng.url + "/v1/chat/completions", json=body(), headers={"x-tenant": "late", "x-request-deadline-ms": "20000"}, timeout=30)
    assert r2.status_code == 200, r2.text
    for t in hs:
        t.join()
    m = eng.metrics_json()["tenants"]["late"]
    assert m["admitted"] == 1, m  # the refused one never went upstream


def test_a_past_deadline_is_refused_without_an_upstream_call(sim, engine_factory):
    eng = engine_factory(make_config([sim], admission_control={"enabled": True, "poll_interval_seconds": 0.1}))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    for value in ("0", "-5"):
        r = eng.post("/v1/chat/completions", json=chat_body(), headers={"x-request-deadline-ms": value})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and "deadline" in err["message"]
    assert sim.stats()["requests_total"] == 0
    # A generous deadline is served.
    r = eng.post("/v1/chat/completions", json=chat_body(), headers={"x-request-deadline-ms": "30000"})
    assert r.status_code == 200, r.text


def test_a_queued_request_leaves_when_its_deadline_passes(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.8)
    eng = engine_factory(make_config([sim], admission_control={"enabled": True, "poll_interval_seconds": 0.1}))
    time.sleep(0.4)
    t0 = time.monotonic()
    r = eng.post("/v1/chat/completions", json=chat_body(), headers={"x-request-deadline-ms": "600"}, timeout=10)
    waited = time.monotonic() - t0
    assert r.status_code == 429 and "deadline" in r.json()["error"]["message"], r.text
    assert 0.5 <= waited < 1.5, waited
    assert sim.stats()["requests_total"] == 0


def limit_config(sim, redis, tpm=None, rpm=None, workers=2, expected=100):
    key = {"key": "sk-limited", "name": "limited"}
    if tpm:
        key["tokens_per_minute"] = tpm
    if rpm:
        key["requests_per_minute"] = rpm
    return make_config([sim], server={"workers": workers}, redis={"url": redis.url if redis else ""},
                       auth={"enabled": True, "api_keys": [key, "sk-plain"]}, cache={"enabled": False},
                       admission_control={"enabled": True, "poll_interval_seconds": 0.2, "expected_output_tokens": expected})


def test_requests_per_minute_hold_across_two_workers_sharing_redis(sim, redis, engine_factory):
    eng = engine_factory(limit_config(sim, redis, rpm=6))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    codes = []
    pids = set()
    for _ in range(10):
        # A new connection each time: SO_REUSEPORT spreads them over both workers.
        r = requests.post(eng.url + "/v1/chat/completions", json=chat_body(), headers={"authorization": "Bearer sk-limited", "connection": "close"})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert "requests per min" in r.json()["error"]["message"]
        else:
            assert r.headers["x-ratelimit-limit-requests"] == "6"
    assert codes.count(200) == 6 and codes.count(429) == 4, codes
    # Both workers took part (the limit is shared, not per process).
    for _ in range(20):
        pids.add(requests.get(eng.url + "/metrics", headers={"accept": "application/json", "connection": "close"}).json()["pid"])
    assert len(pids) == 2
    # A key without limits is not limited and gets no headers.
    r = requests.post(eng.url + "/v1/chat/completions", json=chat_body(), headers={"authorization": "Bearer sk-plain"})
    assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers


def test_token_budget_is_settled_on_real_usage_plain_and_streamed(sim, redis, engine_factory):
    if os.environ.get("SIM_EXTERNAL_URL"):
        # Without max_tokens a real vLLM generates up to max_model_len: the budget below assumes
        # vllm-sim's 16 tokens an answer.
        pytest.skip("the budget arithmetic assumes vllm-sim's 16-token answers")
    tpm = 6000  # 100 tokens a second come back
    eng = engine_factory(limit_config(sim, redis, tpm=tpm, expected=400))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    h = {"authorization": "Bearer sk-limited", "connection": "close"}
    prev = None
    for i in range(8):
        stream = i % 2 == 1
        b = chat_body()
        b.pop("max_tokens", None)  # reserved: prompt + expected_output_tokens (400); the sim generates 16
        if stream:
            b["stream"] = True
        t = time.monotonic()
        r = requests.post(eng.url + "/v1/chat/completions", json=b, headers=h, stream=stream)
        assert r.status_code == 200, r.text
        remaining = int(r.headers["x-ratelimit-remaining-tokens"])
        assert r.headers["x-ratelimit-limit-tokens"] == str(tpm)
        if stream:
            usage = None
            for line in r.iter_lines():
                if line.startswith(b"data: {") and b'"usage"' in line and b'"usage":null' not in line:
                    import json
                    usage = json.loads(line[6:])["usage"]
            assert usage is None  # the client did not ask for it: stripped, yet settled
            used = None
        else:
            used = r.json()["usage"]["total_tokens"]
        if prev is not None:
            # remaining now = remaining then + reserved then − used then − reserved now + refill:
            # with the settlement, the reservation of 400 that was not used comes back.
            p_rem, p_t, p_used = prev
            refill = (t - p_t) * tpm / 60 + 2
            if p_used is not None:
                expected = p_rem - (p_used - reserved) - reserved
                assert expected - 1 <= remaining <= expected + refill, (i, remaining, expected, refill)
        reserved = None
        prev = (remaining, t, used)
        # Reservation size: what the first request's header implies.
        if i == 0:
            first_reserved = tpm - remaining
        reserved = first_reserved
        time.sleep(0.05)
    # Settled on usage: after 8 requests of ~430 reserved (3,440), far more than 6000 − 3440
    # remains — the unused 400-token reservations came back (a streamed one too).
    r = requests.post(eng.url + "/v1/chat/completions", json=chat_body(), headers=h)
    assert int(r.headers["x-ratelimit-remaining-tokens"]) > tpm - 8 * first_reserved + 1000, r.headers


def test_token_budget_runs_out_with_429_and_retry_after(sim, redis, engine_factory):
    eng = engine_factory(limit_config(sim, redis, tpm=600))  # 10 tokens a second come back
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    h = {"authorization": "Bearer sk-limited", "connection": "close"}
    b = chat_body()
    b["max_tokens"] = 500
    assert requests.post(eng.url + "/v1/chat/completions", json=b, headers=h).status_code == 200
    # The first request's unused reservation came back; ask for more than is left.
    r = requests.post(eng.url + "/v1/chat/completions", json={**b, "max_tokens": 590}, headers=h)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded" and "tokens per min" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 590


def test_redis_down_fails_open(sim, redis, engine_factory):
    eng = engine_factory(limit_config(sim, redis, rpm=1, workers=1))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 1)
    redis.stop()
    h = {"authorization": "Bearer sk-limited"}
    for _ in range(3):
        r = requests.post(eng.url + "/v1/chat/completions", json=chat_body(), headers=h, timeout=5)
        assert r.status_code == 200, r.text
    assert eng.metrics_json()["tenants"]["limited"]["admitted"] == 3
    assert "engine_ratelimit_store_unavailable_total 3" in eng.get("/metrics").text
