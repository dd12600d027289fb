"""Issue 3 end to end: the response cache (in process and in a real Redis shared by two Engine
processes), stream recording and replay, policy headers, isolation, single-flight coalescing,
Redis outages, and the stale fallback."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import chat_body, completion_body, make_config, sse_json, wait_until


def cfg(sims, redis=None, **over):
    return make_config(sims, redis={"url": redis.url if redis else ""}, **over)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_hit_after_miss(sim, engine_factory, redis, backend):
    eng = engine_factory(cfg([sim], redis if backend == "redis" else None))
    body = chat_body("cache me", max_tokens=5, temperature=0)
    r1 = eng.post("/v1/chat/completions", json=body)
    assert r1.status_code == 200 and r1.headers["x-cache"] == "MISS"
    r2 = eng.post("/v1/chat/completions", json=body)
    assert r2.status_code == 200 and r2.headers["x-cache"] == "HIT"
    # The same answer, as a response of its own (id and created: test_defaults.py).
    own = {"id", "created"}
    assert {k: v for k, v in r2.json().items() if k not in own} == {k: v for k, v in r1.json().items() if k not in own}
    assert r2.json()["id"] == "chatcmpl-" + r2.headers["x-request-id"] != r1.json()["id"]
    assert sim.stats()["requests_total"] == 1
    # Key order and whitespace do not matter; a parameter does.
    raw = '{ "max_tokens": 5, "temperature": 0,  "messages": [{"content": "cache me", "role": "user"}], "model": "sim-model" }'
    assert eng.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}).headers["x-cache"] == "HIT"
    assert eng.post("/v1/chat/completions", json={**body, "max_tokens": 6}).headers["x-cache"] == "MISS"
    assert eng.post("/v1/chat/completions", json={**body, "messages": [{"role": "system", "content": "cache me"}]}).headers["x-cache"] == "MISS"
    assert sim.stats()["requests_total"] == 3


def test_shared_across_two_engine_processes(sim, engine_factory, redis):
    a = engine_factory(cfg([sim], redis))
    b = engine_factory(cfg([sim], redis))
    body = completion_body("shared", max_tokens=4)
    assert a.post("/v1/completions", json=body).headers["x-cache"] == "MISS"
    r = wait_until(lambda: (x := b.post("/v1/completions", json=body)).headers["x-cache"] == "HIT" and x, timeout=3)
    assert r.json()["usage"]["completion_tokens"] == 4
    assert sim.stats()["requests_total"] == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_ttl_expires(sim, engine_factory, redis, backend):
    # 1 s, not less: the hit must come back within the TTL, and on a loaded machine (a real vLLM
    # on the same CPU) a 0.4 s TTL ran out before the second request was answered.
    eng = engine_factory(cfg([sim], redis if backend == "redis" else None, cache={"ttl_seconds": 1.0}))
    body = chat_body("ttl", max_tokens=2)
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "MISS"
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "HIT"
    time.sleep(1.3)
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_lru_evicts_least_recently_used(sim, engine_factory, redis, backend):
    eng = engine_factory(cfg([sim], redis if backend == "redis" else None, cache={"max_size": 2}))
    A, B, C = (chat_body(x, max_tokens=1) for x in "ABC")
    for b in (A, B):
        assert eng.post("/v1/chat/completions", json=b).headers["x-cache"] == "MISS"
    assert eng.post("/v1/chat/completions", json=A).headers["x-cache"] == "HIT"  # A is now recent
    assert eng.post("/v1/chat/completions", json=C).headers["x-cache"] == "MISS"  # evicts B
    assert eng.post("/v1/chat/completions", json=A).headers["x-cache"] == "HIT"
    assert eng.post("/v1/chat/completions", json=B).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_stream_is_recorded_then_replayed_as_json_and_sse(sim, engine_factory, redis, backend):
    eng = engine_factory(cfg([sim], redis if backend == "redis" else None))
    body = chat_body("stream me", max_tokens=6, stream=True)
    r = eng.post("/v1/chat/completions", json=body)
    assert r.headers["x-cache"] == "MISS"
    live = sse_json(r.content)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in live if c["choices"])
    plain = wait_until(lambda: (x := eng.post("/v1/chat/completions", json={**body, "stream": False})).headers["x-cache"] == "HIT" and x, timeout=3)
    assert plain.json()["choices"][0]["message"]["content"] == text
    assert plain.json()["choices"][0]["finish_reason"] == "length"
    replay = eng.post("/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}})
    assert replay.headers["x-cache"] == "HIT"
    assert replay.headers["content-type"].startswith("text/event-stream")
    chunks = sse_json(replay.content)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == text
    assert chunks[-1]["choices"] == []  # usage chunk, asked for by this client
    assert sim.stats()["requests_total"] == 1


def test_failed_and_truncated_answers_are_not_cached(sim_factory, engine_factory):
    bad = sim_factory("--error-rate", 1.0)
    eng = engine_factory(cfg([bad], vllm={"retry_count": 0}, model_registry={"fallback_model": None}))
    body = chat_body("fail", max_tokens=3)
    assert eng.post("/v1/chat/completions", json=body).status_code == 502
    bad.configure(error_rate=0.0, disconnect_after_tokens=2)
    sbody = chat_body("cut", max_tokens=10, stream=True)
    r = eng.post("/v1/chat/completions", json=sbody)
    assert "[DONE]" not in r.text
    bad.configure(disconnect_after_tokens=0)
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "MISS"
    assert eng.post("/v1/chat/completions", json=sbody).headers["x-cache"] == "MISS"
    # 4xx answers are not cached either.
    bad4 = completion_body("x", max_tokens=-1)
    assert eng.post("/v1/completions", json=bad4).status_code == 400
    assert eng.post("/v1/completions", json=bad4).headers["x-cache"] == "MISS"


def test_cache_control_no_cache_and_no_store(sim, engine_factory):
    eng = engine_factory(cfg([sim]))
    body = chat_body("cc", max_tokens=2)
    r = eng.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-store"})
    assert r.headers["x-cache"] == "BYPASS"
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "MISS"  # no-store stored nothing
    r = eng.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
    assert r.headers["x-cache"] == "BYPASS"  # skipped the lookup...
    assert sim.stats()["requests_total"] == 3
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "HIT"  # ...but stored


def test_deterministic_only(sim, engine_factory):
    eng = engine_factory(cfg([sim], cache={"deterministic_only": True}))
    hot = chat_body("d", max_tokens=2, temperature=0.9)
    eng.post("/v1/chat/completions", json=hot)
    assert eng.post("/v1/chat/completions", json=hot).headers["x-cache"] == "BYPASS"
    cold = chat_body("d", max_tokens=2, temperature=0)
    eng.post("/v1/chat/completions", json=cold)
    assert eng.post("/v1/chat/completions", json=cold).headers["x-cache"] == "HIT"


def test_per_key_isolation(sim, engine_factory):
    eng = engine_factory(cfg([sim], auth={"enabled": True, "api_keys": ["k1", "k2"]}))
    body = chat_body("mine", max_tokens=2)
    h1, h2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
    assert eng.post("/v1/chat/completions", json=body, headers=h1).headers["x-cache"] == "MISS"
    assert eng.post("/v1/chat/completions", json=body, headers=h1).headers["x-cache"] == "HIT"
    assert eng.post("/v1/chat/completions", json=body, headers=h2).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("stream", [False, True])
def test_20_concurrent_identical_requests_make_one_upstream_call(sim_factory, engine_factory, stream):
    # 10 tokens 80 ms apart: the flight lasts ~0.8 s, so the 20 requests all arrive while it runs
    # even on a loaded machine (at 30 ms, 0.3 s, a few came after it under load: hits, not followers).
    sim = sim_factory("--itl-ms", 80)
    eng = engine_factory(cfg([sim]))
    body = chat_body("together", max_tokens=10, stream=stream)

    def one(_):
        r = requests.post(eng.url + "/v1/chat/completions", json=body, timeout=20)
        assert r.status_code == 200
        if stream:
            chunks = sse_json(r.content)
            return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]), r.headers
        return r.json()["choices"][0]["message"]["content"], r.headers

    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(20)))
    assert len({t for t, _ in results}) == 1
    assert sim.stats()["requests_total"] == 1
    assert sum(1 for _, h in results if h.get("x-coalesced") == "true") >= 15


def test_follower_disconnect_does_not_disturb_leader(sim_factory, engine_factory):
    from harness import RawStream
    sim = sim_factory("--itl-ms", 40)
    eng = engine_factory(cfg([sim]))
    body = chat_body("lead", max_tokens=10, stream=True)
    leader = RawStream(eng.port, "POST", "/v1/chat/completions", body)
    leader.read_head()
    follower = RawStream(eng.port, "POST", "/v1/chat/completions", body)
    follower.read_head()
    follower.read_event()
    follower.close()
    events = []
    while (ev := leader.read_event()) is not None:
        events.append(ev)
    leader.close()
    assert events[-1] == "data: [DONE]"
    assert sim.stats()["requests_total"] == 1 and sim.stats()["aborted"] == 0


def test_leader_disconnect_keeps_generating_for_followers(sim_factory, engine_factory):
    from harness import RawStream
    sim = sim_factory("--itl-ms", 40)
    eng = engine_factory(cfg([sim]))
    body = chat_body("lead2", max_tokens=10, stream=True)
    leader = RawStream(eng.port, "POST", "/v1/chat/completions", body)
    leader.read_head()
    follower = RawStream(eng.port, "POST", "/v1/chat/completions", body)
    follower.read_head()
    leader.close()
    events = []
    while (ev := follower.read_event()) is not None:
        events.append(ev)
    assert events[-1] == "data: [DONE]"
    assert sim.stats()["aborted"] == 0


def test_redis_outage_keeps_serving_and_caching_resumes(sim, engine_factory, redis):
    eng = engine_factory(cfg([sim], redis))
    body = chat_body("outage", max_tokens=2)
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "MISS"
    redis.stop()
    for i in range(5):
        r = eng.post("/v1/chat/completions", json=chat_body(f"down {i}", max_tokens=2), timeout=5)
        assert r.status_code == 200 and r.headers["x-cache"] in ("MISS", "BYPASS")
    redis.start()
    after = chat_body("back", max_tokens=2)
    def cached():
        eng.post("/v1/chat/completions", json=after)
        return eng.post("/v1/chat/completions", json=after).headers["x-cache"] == "HIT"
    wait_until(cached, timeout=10, interval=0.3, what="caching to resume after Redis returns")
    log = eng.log_text()
    # Once per change in each worker (the default: one per core), not once per request.
    workers = len(set(re.findall(r"worker (\d+) started", log))) or 1
    assert log.count("redis lost") == workers


def test_stale_entry_answers_when_every_backend_fails(sim, engine_factory):
    eng = engine_factory(cfg([sim], cache={"ttl_seconds": 0.3, "stale_ttl_seconds": 60},
                             vllm={"retry_count": 0}, model_registry={"fallback_model": None}))
    body = chat_body("stale", max_tokens=3)
    first = eng.post("/v1/chat/completions", json=body).json()
    time.sleep(0.5)
    sim.configure(error_rate=1.0)
    r = eng.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-cache"] == "STALE"
    assert r.json()["choices"] == first["choices"]
    # Never served as fresh: a healthy backend answers anew.
    sim.configure(error_rate=0.0)
    assert eng.post("/v1/chat/completions", json=body).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("stream", [False, True])
def test_identical_requests_across_two_processes_make_one_upstream_call(sim_factory, engine_factory, redis, stream):
    sim = sim_factory("--itl-ms", 40)
    a = engine_factory(cfg([sim], redis))
    b = engine_factory(cfg([sim], redis))
    wait_until(lambda: a.get("/health").status_code == 200 and b.get("/health").status_code == 200)
    time.sleep(0.3)  # both connected to Redis
    body = chat_body("across processes", max_tokens=10, stream=stream)

    def one(i):
        eng = a if i % 2 == 0 else b
        r = requests.post(eng.url + "/v1/chat/completions", json=body, timeout=20)
        assert r.status_code == 200, r.text
        if stream:
            return "".join(c["choices"][0]["delta"].get("content", "") for c in sse_json(r.content) if c["choices"])
        return r.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(20) as ex:
        texts = list(ex.map(one, range(20)))
    assert len(set(texts)) == 1 and texts[0]
    assert sim.stats()["requests_total"] == 1


def test_a_dead_leader_is_taken_over(sim_factory, engine_factory, redis):
    sim = sim_factory("--ttft-ms", 2000)
    a = engine_factory(cfg([sim], redis))
    b = engine_factory(cfg([sim], redis))
    wait_until(lambda: a.get("/health").status_code == 200 and b.get("/health").status_code == 200)
    time.sleep(0.3)
    body = chat_body("orphan", max_tokens=3)
    import threading
    def lead():
        try:
            requests.post(a.url + "/v1/chat/completions", json=body, timeout=30)
        except requests.RequestException:
            pass  # its process is killed below
    t = threading.Thread(target=lead)
    t.start()
    wait_until(lambda: sim.stats()["running"] + sim.stats()["waiting"] == 1, what="leader's call at the sim")
    follower = {}
    t2 = threading.Thread(target=lambda: follower.update(r=requests.post(b.url + "/v1/chat/completions", json=body, timeout=30)))
    t2.start()
    time.sleep(0.3)
    a.kill()  # the leader's process dies without a word
    t2.join(25)
    assert follower["r"].status_code == 200, follower["r"].text
    assert sim.stats()["requests_total"] == 2  # the follower took over with its own call
    t.join(1)


def test_a_queued_leader_that_leaves_does_not_strand_its_flight(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.8)
    eng = engine_factory(cfg([sim], admission_control={"enabled": True, "poll_interval_seconds": 0.1, "max_wait_seconds": 10}))
    time.sleep(0.4)
    body = chat_body("stranded?", max_tokens=2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(eng.url + "/v1/chat/completions", json=body, timeout=0.5)  # leaves while queued
    sim.configure(kv_usage_override=0.1)
    r = requests.post(eng.url + "/v1/chat/completions", json=body, timeout=5)
    assert r.status_code == 200 and r.headers.get("x-coalesced") is None
