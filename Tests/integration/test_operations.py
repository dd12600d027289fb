"""Issue 5 and 12 end to end: access log lines (fields, destinations), request ids, graceful drain on
SIGTERM, the worker supervisor (--workers 2 on one port, a killed worker replaced, SIGHUP replaces
workers), and the per-process metrics port."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import time

import requests

from harness import ENGINE_BIN, JSON_ACCEPT, RawStream, chat_body, free_port, make_config, start_engine, wait_until, worker_pids


def access_lines(eng):
    out = []
    for line in eng.log_text().splitlines():
        if line.startswith('{"time":'):
            out.append(json.loads(line))
    return out


def access_lines_in(text):
    return [json.loads(l) for l in text.splitlines() if l.startswith('{"time":')]


def test_access_log_has_one_json_line_per_request(sim, engine_factory):
    eng = engine_factory(make_config([sim]))
    r = eng.post("/v1/chat/completions", json=chat_body("log me", max_tokens=3),
                 headers={"X-Request-Id": "acc-1", "User-Agent": "acc-test/1.0"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "acc-1"
    eng.post("/v1/chat/completions", data=b"{bad", headers={"X-Request-Id": "acc-2"})
    lines = wait_until(lambda: len(x := access_lines(eng)) >= 2 and x, timeout=3)
    first = next(l for l in lines if l["request_id"] == "acc-1")
    assert first["route"] == "chat" and first["status"] == 200 and first["termination"] == "--"
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", first["client"]) and first["user_agent"] == "acc-test/1.0"
    assert first["model"] == "sim-model" and first["served_model"] == "sim-model"
    assert first["backend"] == sim.url and first["cache"] == "MISS"
    assert first["upstream_status"] == 200
    assert first["bytes_in"] > 0 and first["bytes_out"] > 0
    assert first["ttfb_ms"] is not None and first["duration_ms"] >= first["ttfb_ms"]
    # ISO 8601 UTC with milliseconds, the wall clock at the end of the request.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    t = datetime.datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert abs(t.timestamp() - time.time()) < 30
    bad = next(l for l in lines if l["request_id"] == "acc-2")
    assert bad["status"] == 400 and bad["termination"] == "PR" and bad["method"] == "POST"


def test_access_log_names_unknown_paths_and_fills_model_on_hits(sim, engine_factory):
    eng = engine_factory(make_config([sim], server={"workers": 1}))  # one process: the second call is its memo hit
    body = chat_body("hit me", max_tokens=2)
    for rid in ("hit-1", "hit-2"):
        eng.post("/v1/chat/completions", json=body, headers={"X-Request-Id": rid})
    long_tail = "x" * 400
    eng.get(f"/v1/nowhere/{long_tail}?api_key=secret", headers={"X-Request-Id": "lost-1"})
    requests.delete(eng.url + "/v1/models", headers={"X-Request-Id": "del-1"}, timeout=5)
    requests.head(eng.url + "/v1/completions", headers={"X-Request-Id": "head-1"}, timeout=5)
    lines = wait_until(lambda: len(x := access_lines(eng)) >= 5 and {l["request_id"]: l for l in x}, timeout=3)
    hit = lines["hit-2"]
    assert hit["cache"] == "HIT" and hit["model"] == "sim-model" and hit["served_model"] == "sim-model"
    assert hit["backend"] is None and hit["upstream_status"] is None
    lost = lines["lost-1"]
    assert lost["status"] == 404 and lost["route"] == "-" and lost["method"] == "GET"
    assert lost["path"].startswith("/v1/nowhere/xxx") and lost["path"].endswith("...") and len(lost["path"]) <= 256
    assert "secret" not in json.dumps(lost)  # the query string is not logged
    assert lines["del-1"]["status"] == 405 and lines["del-1"]["method"] == "DELETE" and lines["del-1"]["path"] == "/v1/models"
    assert lines["del-1"]["bytes_out"] > 0
    head = lines["head-1"]  # HEAD on a POST route: a 405 whose body is not sent
    assert head["status"] == 405 and head["method"] == "HEAD" and head["bytes_out"] == 0


def test_access_log_goes_to_stdout_by_default_and_text_logs_to_stderr(sim, engine_factory):
    eng = engine_factory(make_config([sim], server={"workers": 1}), separate_stderr=True)
    eng.post("/v1/chat/completions", json=chat_body("where", max_tokens=1), headers={"X-Request-Id": "out-1"})
    wait_until(lambda: any(l["request_id"] == "out-1" for l in access_lines(eng)), timeout=3, what="access line on stdout")
    err = wait_until(lambda: (t := eng.stderr_path.read_text()) and "backend up" in t and t, timeout=3)
    assert '{"time":' not in err
    assert "backend up" not in eng.log_text()


def test_access_log_destinations(sim, engine_factory, tmp_path):
    # stderr: the access lines join the text log lines there; stdout keeps only the startup line.
    eng = engine_factory(make_config([sim], server={"workers": 1, "access_log": "stderr"}), separate_stderr=True)
    eng.post("/v1/chat/completions", json=chat_body("to stderr", max_tokens=1), headers={"X-Request-Id": "err-1"})
    wait_until(lambda: any(l["request_id"] == "err-1" for l in access_lines_in(eng.stderr_path.read_text())), timeout=3)
    assert not access_lines(eng)
    # A file, appended to by every worker (default worker count); nothing on stdout or stderr.
    path = tmp_path / "logs" / "access.log"
    path.parent.mkdir()
    path.write_text('{"time":"earlier line kept"}\n')
    eng = engine_factory(make_config([sim], server={"access_log": str(path)}), separate_stderr=True)
    for i in range(8):
        with requests.Session() as s:  # new connections: spread over the workers
            s.post(eng.url + "/v1/chat/completions", json=chat_body(f"file {i}", max_tokens=1), headers={"X-Request-Id": f"file-{i}"})
    lines = wait_until(lambda: len(x := [l for l in access_lines_in(path.read_text()) if "request_id" in l]) == 8 and x,
                       timeout=3, what="8 lines in the file")
    assert sorted(l["request_id"] for l in lines) == [f"file-{i}" for i in range(8)]
    assert path.read_text().startswith('{"time":"earlier line kept"}\n')
    assert not access_lines(eng) and '{"time":' not in eng.stderr_path.read_text()
    # off: no line anywhere.
    eng = engine_factory(make_config([sim], server={"workers": 1, "access_log": "off"}), separate_stderr=True)
    eng.post("/v1/chat/completions", json=chat_body("nowhere", max_tokens=1))
    time.sleep(0.3)  # longer than the access log's 100 ms batching
    assert not access_lines(eng) and '{"time":' not in eng.stderr_path.read_text()


def test_access_log_file_that_cannot_be_opened_stops_start_up(sim, tmp_path):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(make_config([sim], server={"workers": 1, "access_log": str(tmp_path / "missing-dir" / "a.log")}))
    p = subprocess.run([ENGINE_BIN, "--config", str(cfg), "--port", "0"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2
    assert "server.access_log: cannot open" in p.stderr and "No such file or directory" in p.stderr


def test_request_id_is_generated_when_absent(sim, engine):
    r = engine.post("/v1/chat/completions", json=chat_body("rid", max_tokens=1))
    rid = r.headers["x-request-id"]
    assert len(rid) == 16 and int(rid, 16) >= 0
    assert sim.stats()["last_request_headers"]["x-request-id"] == rid
    assert r.json()["id"] == f"chatcmpl-{rid}"


def test_client_abort_is_logged_with_its_termination_code(sim_factory, engine_factory):
    sim = sim_factory("--itl-ms", 50)
    eng = engine_factory(make_config([sim]))
    s = RawStream(eng.port, "POST", "/v1/chat/completions", chat_body("abort", max_tokens=100, stream=True),
                  headers={"X-Request-Id": "gone-1"})
    s.read_head()
    s.read_event()
    s.close()
    line = wait_until(lambda: next((l for l in access_lines(eng) if l["request_id"] == "gone-1"), None), timeout=3)
    assert line["termination"] == "CD"


def test_sigterm_drains_a_stream_to_done_and_exits_0(sim_factory, engine_factory):
    sim = sim_factory("--itl-ms", 30)
    eng = engine_factory(make_config([sim]))
    s = RawStream(eng.port, "POST", "/v1/chat/completions", chat_body("drain", max_tokens=30, stream=True))
    s.read_head()
    s.read_event()
    eng.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # No new connections while draining...
    try:
        requests.get(eng.url + "/health", timeout=1)
        refused = False
    except requests.ConnectionError:
        refused = True
    assert refused
    # ...but the stream in flight finishes properly.
    events = []
    while (ev := s.read_event()) is not None:
        events.append(ev)
    assert events[-1] == "data: [DONE]"
    assert eng.proc.wait(timeout=5) == 0


def test_two_workers_share_one_port_and_a_killed_worker_is_replaced(sim, engine_factory):
    eng = engine_factory(make_config([sim], server={"workers": 2}))
    pids = wait_until(lambda: len(x := worker_pids(eng.proc.pid)) == 2 and x, timeout=5)
    seen = set()
    def served_by_both():
        for _ in range(20):
            with requests.Session() as s:  # new connection each time: the kernel spreads them
                seen.add(s.get(eng.url + "/metrics", headers=JSON_ACCEPT, timeout=2).json()["pid"])
        return len(seen) == 2
    wait_until(served_by_both, timeout=10, what="both workers to answer")
    assert seen == set(pids)
    os.kill(pids[0], signal.SIGKILL)
    new = wait_until(lambda: len(x := worker_pids(eng.proc.pid)) == 2 and x != pids and x, timeout=5)
    assert pids[0] not in new
    for i in range(10):
        assert requests.post(eng.url + "/v1/chat/completions", json=chat_body(f"w{i}", max_tokens=1), timeout=5).status_code == 200
    # SIGHUP: every worker replaced with one that re-read the config, and still serving.
    eng.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(x := worker_pids(eng.proc.pid)) == 2 and not set(x) & set(new), timeout=10,
               what="workers replaced after SIGHUP")
    assert requests.get(eng.url + "/health", timeout=2).status_code == 200
    # SIGTERM to the supervisor: all workers drain and it exits 0.
    eng.proc.send_signal(signal.SIGTERM)
    assert eng.proc.wait(timeout=10) == 0


def test_metrics_port_serves_this_process(sim, engine_factory):
    mport = free_port()
    # One process: its metrics port and its main port must name the same pid.
    eng = engine_factory(make_config([sim], server={"metrics_port": mport, "workers": 1}))
    m = requests.get(f"http://127.0.0.1:{mport}/metrics", headers=JSON_ACCEPT, timeout=2).json()
    assert m["pid"] == eng.metrics_json()["pid"]
    assert requests.get(f"http://127.0.0.1:{mport}/metrics/prometheus", timeout=2).status_code == 200


def test_version_and_help(engine):
    p = subprocess.run([ENGINE_BIN, "--version"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and p.stdout.strip() == engine.get("/health").json()["version"]
    p = subprocess.run([ENGINE_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for word in ("VLLM_URL", "REDIS_URL", "--config", "--workers", "--share-port", "--version", "/livez", "/readyz"):
        assert word in p.stdout, word
