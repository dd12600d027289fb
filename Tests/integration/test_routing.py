"""Issue 4 end to end: model routing by prompt size, KV-pressure admission (queue, release, 429),
breakers skipping a failing backend, the fallback chain, and API-key auth."""

from __future__ import annotations

import threading
import time

import requests

from harness import RawStream, chat_body, completion_body, free_port, make_config, wait_until


def routing_config(fast, large, **over):
    return make_config([fast, large], model_registry={"fast_model": "fast-m", "large_model": "large-m",
                                                      "fallback_model": None, "fast_model_token_threshold": 50}, **over)


def test_short_prompts_go_fast_long_go_large_explicit_is_kept(sim_factory, engine_factory):
    fast = sim_factory("--model", "fast-m")
    large = sim_factory("--model", "large-m")
    eng = engine_factory(routing_config(fast, large))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 2)
    r = eng.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "short"}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.headers["x-routed-model"] == "fast-m" and r.json()["model"] == "fast-m"
    long_text = "word " * 400
    r = eng.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": long_text}], "max_tokens": 2})
    assert r.headers["x-routed-model"] == "large-m" and r.json()["model"] == "large-m"
    r = eng.post("/v1/completions", json={"prompt": long_text, "max_tokens": 2})
    assert r.json()["model"] == "large-m"
    # Explicit: never re-routed, even when long.
    r = eng.post("/v1/chat/completions", json={"model": "fast-m", "messages": [{"role": "user", "content": long_text}], "max_tokens": 2})
    assert r.json()["model"] == "fast-m" and "x-routed-model" not in r.headers
    assert fast.stats()["requests_total"] == 2 and large.stats()["requests_total"] == 2
    assert large.stats()["last_request_body"].count('"model":"large-m"') == 1


def test_a_worker_listens_once_it_knows_its_backends_models(bad_upstream_factory, engine_factory):
    """Two backends, one model each, that take 0.4 s to list their models. Every worker (the
    default count) binds the port only once it has their lists: the requests sent the moment the
    Engine is up, each on a new connection (the kernel spreads them over the workers), all reach
    the backend that serves their model. Before, a worker listened at once and, while the lists
    were unknown, counted both backends as serving anything: about half went to the other one."""
    a = bad_upstream_factory("ok", "--model", "model-a", "--models-delay-ms", 400)
    b = bad_upstream_factory("ok", "--model", "model-b", "--models-delay-ms", 400)
    eng = engine_factory(make_config([a, b], admission_control={"enabled": False}, cache={"enabled": False},
                                     model_registry={"fast_model": "model-a", "large_model": "model-a",
                                                     "fallback_model": None}))
    for i in range(16):
        r = requests.post(eng.url + "/v1/chat/completions", json=chat_body(f"to b {i}", model="model-b"), timeout=10)
        assert r.status_code == 200, r.text
    assert a.stats()["requests_total"] == 0
    assert b.stats()["requests_total"] == 16


def admission_config(sim, **over):
    ac = {"enabled": True, "soft_limit": 0.7, "hard_limit": 0.9, "poll_interval_seconds": 0.1, "max_wait_seconds": 10}
    ac.update(over.pop("admission_control", {}))
    return make_config([sim], admission_control=ac, **over)


def test_requests_queue_under_kv_pressure_and_are_released_when_it_drops(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.8)
    # One process: the queue asserted through /metrics is that worker's.
    eng = engine_factory(admission_config(sim, server={"workers": 1}))
    time.sleep(0.4)  # a poll has seen 0.8
    result = {}

    def call():
        t0 = time.monotonic()
        result["r"] = eng.post("/v1/chat/completions", json=chat_body(), timeout=15)
        result["t"] = time.monotonic() - t0

    th = threading.Thread(target=call)
    th.start()
    time.sleep(1.0)
    assert "r" not in result, "the request should wait while KV usage is between the limits"
    assert sim.stats()["requests_total"] == 0
    assert eng.metrics_json()["admission"]["queued"] == 1
    sim.configure(kv_usage_override=0.1)
    th.join(10)
    assert result["r"].status_code == 200, result["r"].text
    assert result["t"] >= 1.0
    assert sim.stats()["requests_total"] == 1


def test_above_hard_limit_is_429_with_retry_after_and_no_upstream_call(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.95)
    eng = engine_factory(admission_config(sim))
    time.sleep(0.4)
    r = eng.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert sim.stats()["requests_total"] == 0


def test_queued_wait_runs_out_into_429(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.8)
    eng = engine_factory(admission_config(sim, admission_control={"max_wait_seconds": 0.5}))
    time.sleep(0.4)
    t0 = time.monotonic()
    r = eng.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 429 and "retry-after" in r.headers
    assert 0.4 < time.monotonic() - t0 < 3


def test_queued_stream_gets_keepalive_comments(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.8)
    eng = engine_factory(admission_config(sim))
    time.sleep(0.4)
    with RawStream(eng.port, "POST", "/v1/chat/completions", chat_body(max_tokens=3, stream=True), timeout=15) as s:
        status, headers = s.read_head()  # arrives with the first keepalive (~5 s)
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        assert s.read_event() == ": queued"
        sim.configure(kv_usage_override=0.0)
        events = []
        while (ev := s.read_event()) is not None:
            events.append(ev)
    assert events[-1] == "data: [DONE]"
    assert sum(1 for e in events if e.startswith("data: {")) == 4


def test_failing_backend_is_skipped_after_threshold_and_clients_never_see_it(sim_factory, engine_factory):
    bad = sim_factory("--error-rate", 1.0)
    good = sim_factory()
    # One process: breakers are per worker (each would let `failure_threshold` failures through).
    eng = engine_factory(make_config([bad, good], server={"workers": 1},
                                     circuit_breaker={"failure_threshold": 2, "cooldown_seconds": 60},
                                     vllm={"retry_backoff_seconds": 0.01, "retry_count": 2}))
    for i in range(20):
        r = eng.post("/v1/chat/completions", json=chat_body(f"q{i}"))
        assert r.status_code == 200, r.text
    assert bad.stats()["requests_total"] <= 2
    m = eng.metrics_json()
    assert [b["breaker"] for b in m["backends"]] == ["open", "closed"]


def test_half_open_lets_one_probe_and_recovery_closes(sim_factory, engine_factory):
    flaky = sim_factory("--error-rate", 1.0)
    # One process: the breaker's states are per worker.
    eng = engine_factory(make_config([flaky], server={"workers": 1},
                                     circuit_breaker={"failure_threshold": 1, "cooldown_seconds": 0.5},
                                     vllm={"retry_count": 0}, model_registry={"fallback_model": None}))
    assert eng.post("/v1/chat/completions", json=chat_body()).status_code == 502
    r = eng.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 503 and "retry-after" in r.headers  # open: no backend
    assert flaky.stats()["requests_total"] == 1
    flaky.configure(error_rate=0.0)
    time.sleep(0.6)
    assert eng.post("/v1/chat/completions", json=chat_body()).status_code == 200  # the probe
    assert eng.metrics_json()["backends"][0]["breaker"] == "closed"


def test_fallback_model_answers_when_the_primary_pool_fails(sim_factory, engine_factory):
    primary = sim_factory("--model", "big", "--error-rate", 1.0)
    backup = sim_factory("--model", "small")
    eng = engine_factory(make_config([primary, backup], model_registry={"fallback_model": "small"},
                                     vllm={"retry_count": 1, "retry_backoff_seconds": 0.01}))
    wait_until(lambda: eng.get("/health").json()["backends"]["up"] == 2)
    r = eng.post("/v1/chat/completions", json=chat_body(model="big"))
    assert r.status_code == 200, r.text
    assert r.headers["x-fallback"] == "model"
    assert r.json()["model"] == "small"
    assert primary.stats()["requests_total"] == 2 and backup.stats()["requests_total"] == 1


def test_everything_down_is_503_with_retry_after(engine_factory):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    eng = engine_factory(make_config([url], vllm={"retry_count": 0}, circuit_breaker={"failure_threshold": 1}))
    eng.post("/v1/chat/completions", json=chat_body())
    r = eng.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 503, r.text
    assert "retry-after" in r.headers
    assert r.json()["error"]["code"] == "service_unavailable"


def test_auth_accepts_rejects_and_never_forwards_keys(sim, engine_factory):
    import hashlib
    digest = hashlib.sha256(b"hashed-key").hexdigest()
    eng = engine_factory(make_config([sim], auth={"enabled": True, "api_keys": ["plain-key", f"sha256:{digest}"]}))
    r = eng.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = eng.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    for key in ("plain-key", "hashed-key"):
        r = eng.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert "authorization" not in sim.stats()["last_request_headers"]
    assert eng.get("/health").status_code == 200  # open
    assert eng.get("/metrics").status_code == 200  # protect_metrics is off
    assert eng.get("/v1/models").status_code == 401
    log = eng.log_text()
    assert "plain-key" not in log and "hashed-key" not in log


def test_exact_token_count_asks_tokenize(sim_factory, engine_factory):
    fast = sim_factory("--model", "fast-m")
    large = sim_factory("--model", "large-m")
    prompt = "a a a a a a a a a a a a a a a a a a a a"  # 39 bytes: the estimate says 9 tokens
    exact = requests.post(fast.url + "/tokenize", json={"prompt": prompt}).json()["count"]
    assert exact != 39 // 4, "pick a prompt where the estimate and the tokenizer disagree"
    # Threshold between the two counts: the estimate and the exact count route differently.
    lo, hi = sorted((exact, 39 // 4))
    threshold = hi
    over = {"model_registry": {"fast_model": "fast-m", "large_model": "large-m", "fallback_model": None,
                               "fast_model_token_threshold": threshold}}
    est_eng = engine_factory(make_config([fast, large], **over))
    exact_over = {"model_registry": {**over["model_registry"], "exact_token_count": True}}
    exact_eng = engine_factory(make_config([fast, large], **exact_over))
    for e in (est_eng, exact_eng):
        wait_until(lambda: e.get("/health").json()["backends"]["up"] == 2)
    by_estimate = est_eng.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1}).headers["x-routed-model"]
    by_exact = exact_eng.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1}).headers["x-routed-model"]
    assert by_estimate != by_exact
    assert by_exact == ("large-m" if exact >= threshold else "fast-m")
