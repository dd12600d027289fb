"""Issue 5 and 12: /metrics is valid Prometheus exposition (promtool when installed, prometheus_client's
parser when importable, and a strict check here), /metrics/prometheus its alias, JSON on request; the
series move with traffic; process_* series; latency histograms by model and backend; HEAD and probes."""

from __future__ import annotations

import http.client
import math
import os
import re
import shutil
import subprocess
import time

import pytest

from harness import JSON_ACCEPT, chat_body, free_port, make_config, metric_value, parse_metrics, sse_json, wait_until

PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# What Prometheus 2.x itself sends when it scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def prom(eng, path: str = "/metrics/prometheus") -> str:
    r = eng.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == PROM_CONTENT_TYPE
    return r.text


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABELS = r'\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?\}'
_SAMPLE_LINE = re.compile(rf"^({_NAME})({_LABELS})? (\S+)$")


def check_exposition(text: str) -> dict[str, str]:
    """A strict reading of text format 0.0.4 as the Engine writes it: every family has HELP then TYPE
    before its samples, each sample belongs to the family just declared (histograms: _bucket, _sum,
    _count), values parse, no series repeats, buckets are cumulative and end in +Inf == _count.
    Returns family name -> type."""
    assert text.endswith("\n") and "\r" not in text
    types: dict[str, str] = {}
    family = None
    seen: set[str] = set()
    buckets: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, float] = {}
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in types, f"family {name} twice"
            family = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name == family and typ in ("counter", "gauge", "histogram"), line
            types[name] = typ
            continue
        m = _SAMPLE_LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert family in types, f"sample before TYPE: {line!r}"
        v = float(value)  # accepts NaN, +Inf
        allowed = {family} if types[family] != "histogram" else {family + "_bucket", family + "_sum", family + "_count"}
        assert name in allowed, f"{name} under family {family}"
        if types[family] == "counter":
            assert name.endswith("_total") and v >= 0, line
        key = name + labels
        assert key not in seen, f"series twice: {key}"
        seen.add(key)
        if name.endswith("_bucket") and types[family] == "histogram":
            le = re.search(r'le="([^"]*)"', labels).group(1)
            series = family + re.sub(r',?le="[^"]*"', "", labels).replace("{,", "{").replace("{}", "")
            buckets.setdefault(series, []).append((math.inf if le == "+Inf" else float(le), v))
        elif name.endswith("_count") and types[family] == "histogram":
            counts[family + labels] = v
    for series, bs in buckets.items():
        les = [le for le, _ in bs]
        assert les == sorted(les) and les[-1] == math.inf, series
        cum = [c for _, c in bs]
        assert cum == sorted(cum), f"buckets not cumulative: {series}"
        assert counts[series] == cum[-1], series
    return types


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
    text = wait_until(lambda: (t := prom(eng, "/metrics")) and metric_value(t, "engine_backend_kv_cache_usage", backend=sim.url) is not None and t)
    types = check_exposition(text)
    samples = parse_metrics(text)
    assert samples, "no samples parsed"
    names = {n for n, _, _ in samples}
    assert all(n.startswith(("engine_", "process_")) for n in names), names
    assert metric_value(text, "engine_cache_hits_total") == 1
    assert metric_value(text, "engine_cache_misses_total") == 2
    assert metric_value(text, "engine_requests_total", route="chat", model="sim-model", status="2xx", cache="HIT") == 1
    assert metric_value(text, "engine_completion_tokens_total", model="sim-model") == 9  # 4 plain + 5 streamed
    assert metric_value(text, "engine_backend_kv_cache_usage", backend=sim.url) == pytest.approx(0.42)
    assert metric_value(text, "engine_backend_breaker_state", backend=sim.url) == 0
    # Latency histograms by served model and backend: two answers came from the simulator, the
    # hit from no backend.
    assert types["engine_request_duration_seconds"] == "histogram"
    assert metric_value(text, "engine_request_duration_seconds_count", model="sim-model", backend=sim.url) == 2
    assert metric_value(text, "engine_request_duration_seconds_count", model="sim-model", backend="none") == 1
    assert metric_value(text, "engine_time_to_first_byte_seconds_count", model="sim-model", backend=sim.url) == 2
    # First token: the plain answer, and the stream's first event (never before its head).
    assert types["engine_time_to_first_token_seconds"] == "histogram"
    assert metric_value(text, "engine_time_to_first_token_seconds_count", model="sim-model", backend=sim.url) == 2
    assert (metric_value(text, "engine_time_to_first_token_seconds_sum", model="sim-model", backend=sim.url)
            >= metric_value(text, "engine_time_to_first_byte_seconds_sum", model="sim-model", backend=sim.url))
    assert metric_value(text, "engine_overhead_seconds_count", model="sim-model", backend="none") == 1
    assert sum(v for n, _, v in samples if n == "engine_request_duration_seconds_count") == 3
    assert metric_value(text, "engine_stream_chunk_gap_seconds_count") >= 4
    assert metric_value(text, "engine_terminations_total", code="--") == 3
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, p.stdout + p.stderr
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:
        assert {f.name for f in text_string_to_metric_families(text)} >= {"engine_request_duration_seconds", "process_cpu_seconds"}


def test_process_series_describe_the_answering_process(sim, engine_factory):
    eng = engine_factory(make_config([sim], server={"workers": 1}))
    text = prom(eng, "/metrics")
    pid = eng.metrics_json()["pid"]
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/stat") as f:
        btime = next(int(l.split()[1]) for l in f if l.startswith("btime "))
    start = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    assert metric_value(text, "process_start_time_seconds") == pytest.approx(start, abs=0.02)
    assert abs(metric_value(text, "process_start_time_seconds") - time.time()) < 120
    assert 1 << 20 < metric_value(text, "process_resident_memory_bytes") < 1 << 31
    assert metric_value(text, "process_virtual_memory_bytes") >= metric_value(text, "process_resident_memory_bytes")
    assert 0 <= metric_value(text, "process_cpu_seconds_total") < 60
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert abs(metric_value(text, "process_open_fds") - fds) <= 3  # connections come and go
    assert metric_value(text, "process_max_fds") >= metric_value(text, "process_open_fds")
    types = check_exposition(text)
    assert types["process_cpu_seconds_total"] == "counter" and types["process_open_fds"] == "gauge"


def test_metrics_negotiates_text_or_json(sim, engine_factory):
    eng = engine_factory(make_config([sim], server={"workers": 1}))
    for accept in (None, "*/*", PROMETHEUS_ACCEPT, "text/plain", "application/json, text/plain, */*"):
        r = eng.get("/metrics", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200
        assert r.headers["content-type"] == PROM_CONTENT_TYPE, accept
        assert r.headers["vary"].lower() == "accept"
        check_exposition(r.text)
    for accept in ("application/json", "application/json;q=0.9, text/plain;q=0.5"):
        r = eng.get("/metrics", headers={"Accept": accept})
        assert r.headers["content-type"] == "application/json", accept
        assert r.json()["pid"] > 0 and "process" in r.json()
    # The alias is always text, whatever Accept says.
    r = eng.get("/metrics/prometheus", headers=JSON_ACCEPT)
    assert r.headers["content-type"] == PROM_CONTENT_TYPE


def test_json_metrics_snapshot(sim, engine_factory):
    engine = engine_factory(make_config([sim], server={"workers": 1}))  # one process's counters
    body = chat_body("json", max_tokens=2)
    engine.post("/v1/chat/completions", json=body)
    engine.post("/v1/chat/completions", json=body)
    m = engine.metrics_json()
    assert m["version"] and m["uptime_seconds"] > 0
    assert m["cache"]["hits"] == 1 and m["cache"]["misses"] == 1 and m["cache"]["hit_ratio"] == 0.5
    assert m["requests_in_flight"] == 0
    assert m["process"]["resident_memory_bytes"] > 0 and m["process"]["open_fds"] > 0
    b = m["backends"][0]
    assert b["url"] == sim.url and b["breaker"] == "closed" and b["healthy"] is True


def test_probes_liveness_and_readiness(sim, engine_factory):
    dead = f"http://127.0.0.1:{free_port()}"
    eng = engine_factory(make_config([sim], server={"workers": 1}, vllm={"health_check_interval_seconds": 0.2}))
    wait_until(lambda: eng.get("/readyz").status_code == 200, what="readyz 200 with the backend up")
    assert eng.get("/health").json()["status"] == "ok"
    r = eng.get("/livez")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # No backend up: not ready (the same answer as /health), but alive.
    down = engine_factory(make_config([dead], server={"workers": 1}))
    for path in ("/readyz", "/health"):
        r = down.get(path)
        assert r.status_code == 503 and r.json()["status"] == "unavailable", path
    assert down.get("/livez").status_code == 200


def test_head_on_probe_and_metrics_paths(sim, engine_factory):
    eng = engine_factory(make_config([sim], server={"workers": 1}))
    wait_until(lambda: eng.get("/health").status_code == 200, what="backend up")
    conn = http.client.HTTPConnection("127.0.0.1", eng.port, timeout=5)
    try:
        for path in ("/livez", "/readyz", "/health", "/metrics", "/metrics/prometheus", "/v1/models"):
            # HEAD then GET on one keep-alive connection: a body sent after the HEAD would be read
            # as the GET's status line.
            conn.request("HEAD", path)
            h = conn.getresponse()
            assert h.status == 200, path
            assert h.read() == b""
            head_len = int(h.getheader("content-length"))
            head_type = h.getheader("content-type")
            conn.request("GET", path)
            g = conn.getresponse()
            body = g.read()
            assert g.status == 200 and g.getheader("content-type") == head_type, path
            if path in ("/livez", "/readyz", "/health", "/v1/models"):
                assert head_len == len(body), path
            else:
                assert head_len > 0 and abs(head_len - len(body)) < 2000, path  # counters moved in between
        # HEAD on a POST route is a 405 without a body; the connection stays usable.
        conn.request("HEAD", "/v1/chat/completions")
        r = conn.getresponse()
        assert r.status == 405 and r.read() == b"" and r.getheader("allow") == "POST"
        conn.request("POST", "/livez", body=b"{}")
        r = conn.getresponse()
        assert r.status == 405 and r.getheader("allow") == "GET, HEAD"
        r.read()
        conn.request("GET", "/livez")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
