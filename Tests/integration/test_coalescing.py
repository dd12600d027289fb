"""Issue 9 end to end: a flight is joined only while it runs (in one process and across
processes), followers get the form they asked for, the default config (one worker per core, no
redis.url) shares one cache and flight table, usage is read by a JSON parser, and bytes_out counts
what every client received.

Stores: "redis" = a real redis-server named by redis.url; "default" = no redis.url with the
default worker count (on a multi-core machine the supervisor's private redis-server); "one" = a
single process with the embedded in-process store."""

from __future__ import annotations

import http.server
import json
import re
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import JSON_ACCEPT, chat_body, make_config, metric_value, sse_json, sse_payloads, wait_until

STORES = ["redis", "default", "one"]


def cfg(sims, store, redis, **over):
    server = over.pop("server", {})
    if store == "redis":
        return make_config(sims, redis={"url": redis.url}, server={"workers": 0, **server}, **over)
    if store == "default":
        return make_config(sims, server={"workers": 0, **server}, **over)
    return make_config(sims, server={"workers": 1, **server}, **over)


def post(eng, body, **kw):
    # A new connection each time: with several workers the kernel spreads them.
    with requests.Session() as s:
        return s.post(eng.url + "/v1/chat/completions", json=body, timeout=kw.pop("timeout", 20), **kw)


def text_of(r, stream):
    if stream:
        return "".join(c["choices"][0]["delta"].get("content", "") for c in sse_json(r.content) if c.get("choices"))
    return r.json()["choices"][0]["message"]["content"]


def ready(eng):
    wait_until(lambda: eng.get("/health").status_code == 200, timeout=10)
    time.sleep(0.4)  # every worker connected to Redis


@pytest.mark.parametrize("store", STORES)
def test_after_the_leader_ends_only_the_cache_answers(sim, engine_factory, redis, store):
    eng = engine_factory(cfg([sim], store, redis, cache={"ttl_seconds": 1}, circuit_breaker={"failure_threshold": 100}))
    ready(eng)
    body = chat_body("flight over", max_tokens=4, temperature=0)
    r = post(eng, body)
    assert r.headers["x-cache"] == "MISS"
    r = wait_until(lambda: (x := post(eng, body)).headers["x-cache"] == "HIT" and x, timeout=3)
    calls = sim.stats()["requests_total"]
    time.sleep(1.6)  # the entry expired; the flight ended long ago
    r = post(eng, body)
    assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
    assert r.headers.get("x-coalesced") is None
    assert sim.stats()["requests_total"] == calls + 1
    # no-cache never follows anything: its own upstream call, every time.
    for _ in range(2):
        r = post(eng, body, headers={"Cache-Control": "no-cache"})
        assert r.headers["x-cache"] == "BYPASS" and r.headers.get("x-coalesced") is None
    assert sim.stats()["requests_total"] == calls + 3


@pytest.mark.parametrize("store", STORES)
def test_an_evicted_entry_is_not_served_by_an_old_flight(sim, engine_factory, redis, store):
    eng = engine_factory(cfg([sim], store, redis, cache={"max_size": 3}))
    ready(eng)
    first = chat_body("evict me 0", max_tokens=2)
    post(eng, first)
    for i in range(1, 5):
        post(eng, chat_body(f"evict me {i}", max_tokens=2))
    calls = sim.stats()["requests_total"]
    r = post(eng, first)
    assert r.headers["x-cache"] == "MISS" and r.headers.get("x-coalesced") is None
    assert sim.stats()["requests_total"] == calls + 1


@pytest.mark.parametrize("store", STORES)
def test_a_cut_stream_is_never_replayed_as_complete(sim, engine_factory, redis, store):
    eng = engine_factory(cfg([sim], store, redis, vllm={"retry_count": 0}, circuit_breaker={"failure_threshold": 100}))
    ready(eng)
    body = chat_body("cut me", max_tokens=8, stream=True)
    body["stream_options"] = {"include_usage": True}
    sim.configure(disconnect_after_tokens=4)
    r = post(eng, body)
    assert "[DONE]" not in r.text
    payloads = sse_payloads(r.content)
    assert payloads and "error" in json.loads(payloads[-1])  # one error event, not a fake success
    assert sum("error" in p for p in payloads) == 1
    sim.configure(disconnect_after_tokens=0)
    r = post(eng, body)
    assert r.status_code == 200 and r.headers.get("x-coalesced") is None and r.headers["x-cache"] == "MISS"
    chunks = sse_json(r.content)  # complete: ends with [DONE]
    assert chunks[-1]["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("leader_stream", [True, False])
def test_followers_in_another_process_get_their_own_form(sim_factory, engine_factory, redis, leader_stream):
    sim = sim_factory("--itl-ms", 40)
    a = engine_factory(cfg([sim], "redis", redis))
    b = engine_factory(cfg([sim], "redis", redis))
    ready(a)
    ready(b)
    prompt = "form across processes"
    out = {}

    def lead():
        out["lead"] = post(a, chat_body(prompt, max_tokens=10, stream=leader_stream))

    t = threading.Thread(target=lead)
    t.start()
    wait_until(lambda: sim.stats()["running"] == 1, what="the leader's call at the sim")
    followers = {}

    def follow(stream, usage):
        body = chat_body(prompt, max_tokens=10, stream=stream)
        if usage:
            body["stream_options"] = {"include_usage": True}
        followers[(stream, usage)] = post(b, body)

    ts = [threading.Thread(target=follow, args=a_) for a_ in [(not leader_stream, False), (leader_stream, False), (True, True)]]
    for x in ts:
        x.start()
    for x in ts + [t]:
        x.join(20)
    lead_text = text_of(out["lead"], leader_stream)
    assert lead_text
    for (stream, usage), r in followers.items():
        assert r.status_code == 200, r.text
        assert r.headers.get("x-coalesced") == "true"
        if stream:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.text.rstrip().endswith("data: [DONE]")
            chunks = sse_json(r.content)
            usage_chunks = [c for c in chunks if c.get("choices") == [] and c.get("usage")]
            assert bool(usage_chunks) == usage, (usage, chunks[-2:])
        else:
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["object"] == "chat.completion"
        assert text_of(r, stream) == lead_text
    assert sim.stats()["requests_total"] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_default_workers_share_one_flight_and_one_cache(sim_factory, engine_factory, redis, stream):
    sim = sim_factory("--itl-ms", 30)
    eng = engine_factory(cfg([sim], "default", redis))
    ready(eng)
    body = chat_body("default config", max_tokens=8, stream=stream)
    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda _: post(eng, body), range(20)))
    assert all(r.status_code == 200 for r in results)
    assert len({text_of(r, stream) for r in results}) == 1
    assert sim.stats()["requests_total"] == 1
    pids = set()
    for _ in range(12):
        r = post(eng, body)
        assert r.headers["x-cache"] == "HIT", r.headers
        with requests.Session() as s:
            pids.add(s.get(eng.url + "/metrics", headers=JSON_ACCEPT, timeout=2).json()["pid"])
    assert sim.stats()["requests_total"] == 1
    if (os.cpu_count() or 1) > 1:  # several workers: the answers live in the shared-memory segment
        assert eng.metrics_json()["cache"]["backend"] == "shared_memory"
    # Stale serving on every worker once the backend is gone.
    sim.stop()
    for _ in range(8):
        r = post(eng, chat_body("default config", max_tokens=8, stream=stream), headers={"Cache-Control": "no-cache"})
        assert r.status_code == 200 and r.headers["x-cache"] == "STALE", (r.status_code, r.text[:200])


class _SpacedUpstream(http.server.BaseHTTPRequestHandler):
    """A backend that writes JSON the way Python's json.dumps does (", " and ": ")."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "sim-model", "object": "model", "owned_by": "vllm"}]})
        elif self.path.startswith("/metrics"):
            data = b""
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send(200, {})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n))
        if req.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [
                {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "sim-model",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]},
                {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "sim-model", "choices": [],
                 "usage": {"prompt_tokens": 7, "total_tokens": 10, "completion_tokens": 3}},
            ]
            payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
            return
        self._send(200, {"id": "p", "object": "chat.completion", "created": 1, "model": "sim-model",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 11, "total_tokens": 16, "completion_tokens": 5}})


def test_usage_with_any_json_spacing_is_counted(engine_factory):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SpacedUpstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        eng = engine_factory(make_config([url], server={"workers": 1}, admission_control={"enabled": False}))
        assert eng.post("/v1/chat/completions", json=chat_body("spaced", max_tokens=5)).status_code == 200
        r = eng.post("/v1/chat/completions", json=chat_body("spaced stream", max_tokens=5, stream=True))
        assert r.status_code == 200 and "prompt_tokens" not in r.text  # usage chunk not asked for
        text = eng.get("/metrics/prometheus").text
        assert metric_value(text, "engine_prompt_tokens_total", model="sim-model") == 18
        assert metric_value(text, "engine_completion_tokens_total", model="sim-model") == 8
    finally:
        srv.shutdown()


@pytest.mark.parametrize("workers", [0, 1])  # hits through the shared Redis, or the in-process fast path
def test_bytes_out_counts_every_answer(sim, engine_factory, workers):
    eng = engine_factory(make_config([sim], server={"workers": workers}))
    ready(eng)
    body = chat_body("bytes", max_tokens=3)
    cases = []
    cases.append(post(eng, body))                                   # miss
    wait_until(lambda: post(eng, body).headers["x-cache"] == "HIT", timeout=3)
    cases.append(post(eng, body))                                   # hit
    cases.append(post(eng, {**body, "stream": True}))               # hit replayed as a stream
    cases.append(post(eng, {**body, "model": "no-such-model"}))     # error answered by the Engine
    cases.append(requests.post(eng.url + "/v1/nowhere", json={}, timeout=5))
    for r in cases:
        rid = r.headers["x-request-id"]
        line = wait_until(lambda: next((json.loads(l) for l in eng.log_text().splitlines()
                                        if l.startswith("{") and f'"{rid}"' in l), None), timeout=3,
                          what=f"access line of {rid}")
        assert line["bytes_out"] == len(r.content), (line, len(r.content), r.status_code)


def test_mixed_forms_across_the_default_workers(sim_factory, engine_factory, redis):
    """Scenario 2 with the embedded default: identical prompts in every form at once, spread by
    the kernel over the workers; each client gets its own form, one upstream call in all."""
    sim = sim_factory("--itl-ms", 30)
    eng = engine_factory(cfg([sim], "default", redis))
    ready(eng)
    prompt = "mixed forms, default workers"
    forms = [(False, False), (True, False), (True, True)] * 7

    def one(form):
        stream, usage = form
        body = chat_body(prompt, max_tokens=8, stream=stream)
        if usage:
            body["stream_options"] = {"include_usage": True}
        return form, post(eng, body)

    with ThreadPoolExecutor(21) as ex:
        results = list(ex.map(one, forms))
    texts = set()
    for (stream, usage), r in results:
        assert r.status_code == 200, r.text
        if stream:
            assert r.headers["content-type"].startswith("text/event-stream")
            chunks = sse_json(r.content)
            assert bool([c for c in chunks if c.get("choices") == [] and c.get("usage")]) == usage
        else:
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["object"] == "chat.completion"
        texts.add(text_of(r, stream))
    assert len(texts) == 1 and texts.pop()
    assert sim.stats()["requests_total"] == 1
    assert sum(1 for _, r in results if r.headers.get("x-coalesced") == "true") == 20


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the default config runs one process on one core")
def test_default_workers_answer_hits_without_redis(sim, engine_factory):
    """The default config's workers keep their answers in shared memory, so a hit in any worker
    costs no Redis command: with the private redis-server frozen (SIGSTOP: every command would
    wait for its timeout), repeats on new connections, spread over the workers, are immediate hits."""
    eng = engine_factory(make_config([sim]))
    ready(eng)
    body = chat_body("hits without redis", max_tokens=4)
    assert post(eng, body).headers["x-cache"] == "MISS"
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(eng.pid)], capture_output=True, text=True).stdout
    redis_pids = [int(line.split()[0]) for line in out.splitlines() if line.split()[1:] == ["redis-server"]]
    assert len(redis_pids) == 1, out
    os.kill(redis_pids[0], signal.SIGSTOP)
    try:
        pids = set()
        for _ in range(12):
            t0 = time.monotonic()
            r = post(eng, body)
            assert r.status_code == 200 and r.headers["x-cache"] == "HIT", r.headers
            assert time.monotonic() - t0 < 0.2  # a Redis command would have waited 0.25 s
            with requests.Session() as s:  # a new connection, as the posts: the kernel spreads them
                pids.add(s.get(eng.url + "/metrics", headers=JSON_ACCEPT, timeout=2).json()["pid"])
        assert len(pids) > 1  # connections reached both workers
    finally:
        os.kill(redis_pids[0], signal.SIGCONT)
    assert sim.stats()["requests_total"] == 1


def _private_redis_stats(eng) -> dict[str, int]:
    """Calls per command of the supervisor's private redis-server (INFO commandstats)."""
    m = re.search(r"private redis-server at unix://(\S+)", eng.log_text())
    assert m, eng.log_text()[-2000:]
    out = subprocess.run(["redis-cli", "-s", m.group(1), "INFO", "commandstats"], capture_output=True, text=True).stdout
    return {k: int(v) for k, v in re.findall(r"cmdstat_(\w+):calls=(\d+)", out)}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the default config runs one process on one core")
@pytest.mark.parametrize("stream", [False, True])
def test_default_workers_flights_nobody_follows_cost_redis_nothing(sim, engine_factory, stream):
    """The claim lives in the workers' shared memory: unique misses (plain and streamed) claim,
    lead and end without one Redis command; only a reader in another process makes the leader
    write its answer to Redis."""
    eng = engine_factory(make_config([sim]))
    ready(eng)
    post(eng, chat_body("warm up", max_tokens=2))
    before = _private_redis_stats(eng)
    for i in range(12):
        r = post(eng, chat_body(f"nobody follows {i}", max_tokens=4, stream=stream))
        assert r.status_code == 200 and r.headers["x-cache"] == "MISS"
    after = _private_redis_stats(eng)
    used = {k: after.get(k, 0) - before.get(k, 0) for k in after if k not in ("info", "ping", "client")}
    assert not any(used.values()), used
    assert sim.stats()["requests_total"] == 13


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the default config runs one process on one core")
def test_default_workers_late_joiners_get_the_whole_stream(sim_factory, engine_factory):
    """Followers that arrive while the leader streams (on new connections, so in either worker)
    get the whole stream: a reader in the other worker makes the leader write what it relayed so
    far, then the rest as it comes. One upstream call, the same text for every client."""
    sim = sim_factory("--itl-ms", 40)
    eng = engine_factory(make_config([sim]))
    ready(eng)
    body = chat_body("late joiners, default workers", max_tokens=32, stream=True)
    first_events = threading.Event()
    results = {}

    def leader():
        with requests.Session() as s, s.post(eng.url + "/v1/chat/completions", json=body, stream=True, timeout=20) as r:
            chunks = []
            for line in r.iter_lines():
                chunks.append(line)
                if len(chunks) >= 6:
                    first_events.set()
            results["leader"] = (r.status_code, b"\n".join(chunks))

    t = threading.Thread(target=leader)
    t.start()
    assert first_events.wait(10)
    with ThreadPoolExecutor(8) as ex:
        late = list(ex.map(lambda _: post(eng, body), range(8)))
    t.join(20)
    assert all(r.status_code == 200 for r in late)
    assert all(r.headers.get("x-coalesced") == "true" for r in late), [r.headers for r in late]
    texts = {text_of(r, True) for r in late}
    assert len(texts) == 1 and next(iter(texts)), texts
    assert sim.stats()["requests_total"] == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the default config runs one process on one core")
def test_default_workers_a_flight_longer_than_the_lease_keeps_its_claim(sim_factory, engine_factory):
    """A leader whose upstream call outlasts the claim's 4 s lease keeps its claim (the worker's
    lease timer refreshes it every second): requests arriving after 5 s, on new connections and
    so in either worker, follow it instead of calling upstream again."""
    sim = sim_factory("--itl-ms", 500)
    eng = engine_factory(make_config([sim]))
    ready(eng)
    body = chat_body("a long flight, default workers", max_tokens=14)
    results = {}

    def leader():
        results["leader"] = post(eng, body, timeout=30)

    t = threading.Thread(target=leader)
    started = time.monotonic()
    t.start()
    time.sleep(5.0)
    with ThreadPoolExecutor(8) as ex:
        late = list(ex.map(lambda _: post(eng, body, timeout=30), range(8)))
    t.join(30)
    assert time.monotonic() - started > 6.0  # the flight did outlive the lease
    assert results["leader"].status_code == 200
    assert all(r.status_code == 200 for r in late)
    assert all(r.headers.get("x-coalesced") == "true" for r in late), [r.headers for r in late]
    assert {text_of(r, False) for r in late} == {text_of(results["leader"], False)}
    assert sim.stats()["requests_total"] == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the default config runs one process on one core")
def test_a_segment_named_by_the_environment_is_not_trusted(sim, engine_factory):
    """ENGINE_SHARED_CACHE_FD passes the supervisor's own segment to its workers; one set by
    whoever started the Engine (here: stdout's fd) is ignored, not mapped or closed."""
    eng = engine_factory(make_config([sim]), env={"ENGINE_SHARED_CACHE_FD": "1"})
    ready(eng)
    body = chat_body("segment from the environment", max_tokens=3)
    assert post(eng, body).headers["x-cache"] == "MISS"
    assert wait_until(lambda: post(eng, body).headers["x-cache"] == "HIT", timeout=3)
    assert eng.metrics_json()["cache"]["backend"] == "shared_memory"
    assert "is not a shared cache" not in eng.log_text()
