"""Issue 5: /metrics/prometheus is valid exposition (promtool when installed, and parsed here) and
moves with traffic; /metrics JSON carries the same facts."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from harness import chat_body, make_config, metric_value, parse_metrics, sse_json, wait_until


def prom(eng) -> str:
    r = eng.get("/metrics/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def test_exposition_is_valid_and_moves(sim_factory, engine_factory):
    sim = sim_factory("--kv-usage-override", 0.42)
    # One process: the counters asserted here are that process's (each worker keeps its own).
    eng = engine_factory(make_config([sim], server={"workers": 1},
                                     admission_control={"enabled": True, "poll_interval_seconds": 0.1}))
    body = chat_body("metrics", max_tokens=4)
    eng.post("/v1/chat/completions", json=body)
    eng.post("/v1/chat/completions", json=body)  # a hit
    r = eng.post("/v1/chat/completions", json=chat_body("stream tokens", max_tokens=5, stream=True))
    sse_json(r.content)
    text = wait_until(lambda: (t := prom(eng)) and metric_value(t, "engine_backend_kv_cache_usage", backend=sim.url) is not None and t)
    samples = parse_metrics(text)
    assert samples, "no samples parsed"
    names = {n for n, _, _ in samples}
    assert all(n.startswith("engine_") for n in names)
    assert metric_value(text, "engine_cache_hits_total") == 1
    assert metric_value(text, "engine_cache_misses_total") == 2
    assert metric_value(text, "engine_requests_total", route="chat", model="sim-model", status="2xx", cache="HIT") == 1
    assert metric_value(text, "engine_completion_tokens_total", model="sim-model") == 9  # 4 plain + 5 streamed
    assert metric_value(text, "engine_backend_kv_cache_usage", backend=sim.url) == pytest.approx(0.42)
    assert metric_value(text, "engine_backend_breaker_state", backend=sim.url) == 0
    assert metric_value(text, "engine_request_duration_seconds_count") == 3
    assert metric_value(text, "engine_stream_chunk_gap_seconds_count") >= 4
    assert metric_value(text, "engine_terminations_total", code="--") == 3
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, p.stdout + p.stderr


def test_json_metrics_snapshot(sim, engine_factory):
    engine = engine_factory(make_config([sim], server={"workers": 1}))  # one process's counters
    body = chat_body("json", max_tokens=2)
    engine.post("/v1/chat/completions", json=body)
    engine.post("/v1/chat/completions", json=body)
    m = engine.get("/metrics").json()
    assert m["version"] and m["uptime_seconds"] > 0
    assert m["cache"]["hits"] == 1 and m["cache"]["misses"] == 1 and m["cache"]["hit_ratio"] == 0.5
    assert m["requests_in_flight"] == 0
    b = m["backends"][0]
    assert b["url"] == sim.url and b["breaker"] == "closed" and b["healthy"] is True
