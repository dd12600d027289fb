"""vllm-sim on its own, against shared/ref/vllm-api.md (vLLM 0.32.0 as captured) and its own extras:
--ttft-ms, --itl-ms, --kv-usage-override, --error-rate, --disconnect-after-tokens, --model, and
GET /sim/stats, POST /sim/config, POST /sim/reset. The Engine's tests trust the simulator: these
tests are what make that trust earned.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from harness import RawStream, chat_body, completion_body, metric_value, sse_json, sse_payloads, wait_until

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _chat(sim, **kw):
    return chat_body(model=sim.model, temperature=0, **kw)


def _completion(sim, **kw):
    return completion_body(model=sim.model, temperature=0, **kw)


def _stream(sim, path, body):
    """Sends `body` on a raw connection; returns (RawStream, decoded body) after the body ended."""
    s = RawStream(sim.port, "POST", path, body)
    status, headers = s.read_head()
    assert status == 200, s.raw
    assert headers["content-type"].startswith("text/event-stream"), headers
    assert "chunked" in headers.get("transfer-encoding", ""), headers
    body_bytes = s.read_body()
    assert s.complete, f"stream did not end with the last chunk: {s.raw[-200:]!r}"
    s.close()
    return s, body_bytes


def _check_usage(usage):
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(usage[k], int) and usage[k] >= 0, usage
    assert usage["prompt_tokens"] + usage["completion_tokens"] == usage["total_tokens"], usage
    assert usage["prompt_tokens"] > 0, usage


# --------------------------------------------------------------------------------------------
# Plain endpoints
# --------------------------------------------------------------------------------------------


def test_health_is_empty_200(sim):
    r = sim.get("/health")
    assert r.status_code == 200
    assert r.content == b""


def test_models_shape(sim):
    r = sim.get("/v1/models")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [sim.model]
    model = body["data"][0]
    assert model["object"] == "model"
    assert model["owned_by"] == "vllm"
    assert isinstance(model["created"], int)
    assert isinstance(model["max_model_len"], int) and model["max_model_len"] > 0
    assert isinstance(model["permission"], list)


def test_chat_completion_shape(sim):
    r = sim.post(CHAT, json=_chat(sim, max_tokens=8))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == sim.model
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] in ("length", "stop")
    _check_usage(body["usage"])
    assert 1 <= body["usage"]["completion_tokens"] <= 8
    if choice["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 8


def test_completion_shape(sim):
    r = sim.post(COMPLETIONS, json=_completion(sim, max_tokens=8))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["model"] == sim.model
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert isinstance(choice["text"], str) and choice["text"]
    assert choice["finish_reason"] in ("length", "stop")
    _check_usage(body["usage"])
    assert 1 <= body["usage"]["completion_tokens"] <= 8
    if choice["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 8


def test_chat_model_may_be_omitted(sim):
    body = _chat(sim, max_tokens=2)
    del body["model"]
    r = sim.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == sim.model


def test_unknown_fields_are_ignored(sim):
    r = sim.post(CHAT, json=_chat(sim, max_tokens=2, unknown_field=1))
    assert r.status_code == 200, r.text


def test_request_id_header_becomes_response_id(sim):
    r = sim.post(CHAT, json=_chat(sim, max_tokens=2), headers={"X-Request-Id": "my-req-123"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "chatcmpl-my-req-123"


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


def test_chat_stream_framing(sim):
    _, body = _stream(sim, CHAT, _chat(sim, max_tokens=3, stream=True))
    text = body.decode()
    assert text.endswith("data: [DONE]\n\n")
    chunks = sse_json(body)

    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["finish_reason"] is None
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == sim.model
        assert c.get("usage") is None, "usage sent without stream_options.include_usage"

    content = chunks[1:]
    assert content, "no content chunks"
    for c in content[:-1]:
        assert isinstance(c["choices"][0]["delta"]["content"], str)
        assert c["choices"][0]["finish_reason"] is None
    last = content[-1]["choices"][0]
    assert last["finish_reason"] in ("length", "stop")
    if last["finish_reason"] == "length":
        if sim.name == "external":
            # A real vLLM sends one event per token too, but its API server merges the deltas
            # that pile up while it falls behind (its output collector): under CPU load, fewer.
            assert 1 <= len(content) <= 3, "at most one event per token"
        else:
            assert len(content) == 3, "one event per token"


def test_completion_stream_framing(sim):
    _, body = _stream(sim, COMPLETIONS, _completion(sim, max_tokens=3, stream=True))
    assert body.endswith(b"data: [DONE]\n\n")
    chunks = sse_json(body)
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("cmpl-")
    for c in chunks:
        assert c["object"] == "text_completion"
        assert c["model"] == sim.model
        assert isinstance(c["choices"][0]["text"], str)
        assert c.get("usage") is None
    for c in chunks[:-1]:
        assert c["choices"][0]["finish_reason"] is None
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    if chunks[-1]["choices"][0]["finish_reason"] == "length":
        assert len(chunks) == 3, "one event per token"


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_stream_include_usage_adds_final_usage_chunk(sim, path):
    make = _chat if path == CHAT else _completion
    body = make(sim, max_tokens=4, stream=True, stream_options={"include_usage": True})
    _, raw = _stream(sim, path, body)
    chunks = sse_json(raw)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    _check_usage(usage_chunk["usage"])
    assert usage_chunk["id"] == chunks[0]["id"]
    content = chunks[:-1]
    for c in content:
        assert c.get("usage") is None, "usage before the final chunk without continuous_usage_stats"
    assert content[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    token_events = content[1:] if path == CHAT else content  # chat's first chunk is the role
    assert usage_chunk["usage"]["completion_tokens"] == len(token_events)


def test_stream_many_tokens_one_event_each(sim):
    _, raw = _stream(sim, CHAT, _chat(sim, max_tokens=64, stream=True, stream_options={"include_usage": True}))
    chunks = sse_json(raw)
    assert chunks[-1]["usage"]["completion_tokens"] == len(chunks) - 2  # minus role and usage chunks


def test_openai_sdk_reads_sim_responses(sim):
    client = sim.openai()
    r = client.chat.completions.create(model=sim.model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.choices[0].message.content and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model=sim.model, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
            stream=True, stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(chunks) - 2
    c = client.completions.create(model=sim.model, prompt="hello", max_tokens=3)
    assert c.choices[0].text and c.usage.completion_tokens <= 3


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404_json(sim, path, stream):
    make = _chat if path == CHAT else _completion
    body = make(sim, max_tokens=2)
    body["model"] = "nope"
    if stream:
        body["stream"] = True
    r = sim.post(path, json=body)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json"), "errors come before any stream"
    assert r.json() == {
        "error": {
            "message": f"The model `nope` does not exist. Valid aliases: {sim.model}.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


@pytest.mark.parametrize("stream_field", [{}, {"stream": False}])
def test_stream_options_without_stream_is_400(sim, stream_field):
    body = _chat(sim, max_tokens=2, stream_options={"include_usage": True}, **stream_field)
    r = sim.post(CHAT, json=body)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
            "type": "BadRequestError",
            "param": "stream_options",
            "code": 400,
        }
    }


def test_invalid_json_is_400(sim):
    r = sim.post(CHAT, data=b'{"model":"x",', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400
    assert err["type"] == "Bad Request"


def test_max_tokens_above_max_model_len_is_400(sim):
    max_len = sim.get("/v1/models").json()["data"][0]["max_model_len"]
    too_many = max_len + 1
    r = sim.post(COMPLETIONS, json=_completion(sim, max_tokens=too_many))
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": f"max_tokens={too_many} cannot be greater than max_model_len={max_len}. "
            f"Please request fewer output tokens. (parameter=max_tokens, value={too_many})",
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }
    }


def test_unknown_route_is_404_detail(sim):
    r = sim.get("/v1/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _kv_line(model: str) -> re.Pattern:
    return re.compile(r'^vllm:kv_cache_usage_perc\{engine="0",model_name="%s"\} (\S+)$' % re.escape(model), re.M)


def test_metrics_page_has_router_gauges(sim):
    r = sim.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    m = _kv_line(sim.model).search(text)
    assert m, "no vllm:kv_cache_usage_perc{engine=\"0\",model_name=...} line"
    assert 0.0 <= float(m.group(1)) <= 1.0
    assert "# TYPE vllm:kv_cache_usage_perc gauge" in text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert f"# TYPE {name} gauge" in text
        assert metric_value(text, name, engine="0", model_name=sim.model) is not None, name


def test_kv_usage_override_from_command_line(sim_factory):
    s = sim_factory("--kv-usage-override", "0.85")
    m = _kv_line(s.model).search(s.metrics_text())
    assert m and float(m.group(1)) == pytest.approx(0.85)


def test_kv_usage_override_set_live(sim):
    sim.configure(kv_usage_override=0.42)
    wait_until(
        lambda: sim.metric("vllm:kv_cache_usage_perc", model_name=sim.model) == pytest.approx(0.42),
        timeout=2,
        what="kv_cache_usage_perc to read 0.42",
    )


def test_kv_usage_reads_full_while_a_request_waits_for_kv_room(sim_factory):
    """vLLM leaves a request waiting for KV only when its allocated blocks fill the cache (usage
    ~1.0); the sim reserves whole footprints, so while one waits for KV it reports the reserved
    blocks rather than the few held so far (which would read as room while it queues)."""
    import threading

    import requests

    s = sim_factory("--kv-blocks", 6, "--block-size", 16, "--itl-ms", 40, "--max-num-seqs", 64)
    b = chat_body()
    b["max_tokens"] = 32  # 7 prompt tokens + 32: 3 blocks at its longest; two fit in 6
    ts = [threading.Thread(target=requests.post, args=(s.url + "/v1/chat/completions",), kwargs={"json": b}) for _ in range(3)]
    for t in ts:
        t.start()
    wait_until(lambda: s.metric("vllm:num_requests_waiting", model_name=s.model) == 1, timeout=2, what="one waiting")
    assert s.metric("vllm:num_requests_running", model_name=s.model) == 2
    assert s.metric("vllm:kv_cache_usage_perc", model_name=s.model) == pytest.approx(1.0)
    for t in ts:
        t.join()
    # Nothing waits: back to the blocks held (none now).
    assert s.metric("vllm:kv_cache_usage_perc", model_name=s.model) == pytest.approx(0.0)


def test_model_option_renames_model_everywhere(sim_factory):
    s = sim_factory("--model", "other-model")
    assert s.get("/v1/models").json()["data"][0]["id"] == "other-model"
    assert _kv_line("other-model").search(s.metrics_text())
    r = s.post(CHAT, json=chat_body(model="sim-model", max_tokens=2))
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "The model `sim-model` does not exist. Valid aliases: other-model."


# --------------------------------------------------------------------------------------------
# Simulator controls: stats, reset, delays, errors, disconnects
# --------------------------------------------------------------------------------------------


def test_stats_count_requests_and_reset_clears_them(sim):
    sim.reset()
    before = sim.stats()
    assert before["requests_total"] == 0 and before["aborted"] == 0 and before["running"] == 0
    assert sim.post(CHAT, json=_chat(sim, max_tokens=2)).status_code == 200
    assert sim.post(COMPLETIONS, json=_completion(sim, max_tokens=2)).status_code == 200
    after = sim.stats()
    assert after["requests_total"] == 2
    assert after["running"] == 0
    assert after["aborted"] == 0
    sim.reset()
    assert sim.stats()["requests_total"] == 0


def test_client_disconnect_mid_stream_counts_as_aborted(sim_factory):
    s = sim_factory("--itl-ms", "50")
    s.reset()
    with RawStream(s.port, "POST", CHAT, _chat(s, max_tokens=200, stream=True)) as stream:
        status, _ = stream.read_head()
        assert status == 200
        for _ in range(3):
            assert stream.read_event() is not None
        wait_until(lambda: s.stats()["running"] == 1, timeout=2, what="running == 1 during the stream")
        assert s.metric("vllm:num_requests_running", model_name=s.model) == 1
    # The client is gone: vLLM aborts within 0.5 s.
    stats = wait_until(
        lambda: (st := s.stats())["aborted"] == 1 and st["running"] == 0 and st,
        timeout=2,
        what="aborted == 1 and running == 0 after the client left",
    )
    assert stats["requests_total"] == 1
    assert s.metric("vllm:num_requests_running", model_name=s.model) == 0


def test_running_gauge_counts_concurrent_streams(sim_factory):
    s = sim_factory("--itl-ms", "50")
    streams = [RawStream(s.port, "POST", CHAT, _chat(s, max_tokens=200, stream=True)) for _ in range(2)]
    try:
        for st in streams:
            assert st.read_head()[0] == 200
            assert st.read_event() is not None
        wait_until(
            lambda: s.metric("vllm:num_requests_running", model_name=s.model) == 2,
            timeout=2,
            what="num_requests_running == 2",
        )
    finally:
        for st in streams:
            st.close()
    wait_until(
        lambda: s.metric("vllm:num_requests_running", model_name=s.model) == 0,
        timeout=2,
        what="num_requests_running back to 0",
    )


def test_disconnect_after_tokens_cuts_the_stream(sim_factory):
    s = sim_factory("--disconnect-after-tokens", "3")
    with RawStream(s.port, "POST", CHAT, _chat(s, max_tokens=20, stream=True)) as stream:
        status, _ = stream.read_head()
        assert status == 200
        body = stream.read_body()
        assert stream.eof, "the sim should have closed the connection"
        assert not stream.complete, "a cut stream must not end with the last chunk"
    text = body.decode()
    assert "[DONE]" not in text
    events = [e for e in text.split("\n\n") if e]
    chunks = [json.loads(e[len("data: "):]) for e in events if e.startswith("data: {")]
    content = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]
               and "role" not in c["choices"][0]["delta"]]  # fmt: skip
    assert len(content) == 3, f"expected 3 tokens before the cut, got {len(content)}: {text!r}"


def test_error_rate_one_fails_every_request_and_zero_heals(sim_factory):
    s = sim_factory("--error-rate", "1.0")
    r = s.post(CHAT, json=_chat(s, max_tokens=2))
    assert 500 <= r.status_code <= 599, r.status_code
    assert r.json()["error"]["code"] == r.status_code
    s.configure(error_rate=0.0)
    assert s.post(CHAT, json=_chat(s, max_tokens=2)).status_code == 200


def test_error_rate_set_live(sim):
    sim.configure(error_rate=1.0)
    assert sim.post(COMPLETIONS, json=_completion(sim, max_tokens=2)).status_code >= 500
    sim.configure(error_rate=0.0)
    assert sim.post(COMPLETIONS, json=_completion(sim, max_tokens=2)).status_code == 200


def _time_stream(s, max_tokens):
    """(seconds to the first content event, seconds from the first to the last content event)."""
    t0 = time.monotonic()
    times = []
    with RawStream(s.port, "POST", CHAT, _chat(s, max_tokens=max_tokens, stream=True)) as stream:
        assert stream.read_head()[0] == 200
        while (ev := stream.read_event()) is not None:
            if ev == "data: [DONE]":
                break
            delta = json.loads(ev[len("data: "):])["choices"][0]["delta"]
            if "role" not in delta:
                times.append(time.monotonic())
    assert len(times) == max_tokens
    return times[0] - t0, times[-1] - times[0]


def test_ttft_delay(sim_factory):
    s = sim_factory("--ttft-ms", "300", "--itl-ms", "0")
    ttft, _ = _time_stream(s, 2)
    assert ttft >= 0.28, ttft


def test_itl_delay(sim_factory):
    s = sim_factory("--ttft-ms", "0", "--itl-ms", "40")
    _, span = _time_stream(s, 6)
    assert span >= 5 * 0.040 * 0.9, span


def test_itl_set_live(sim):
    sim.configure(itl_ms=40)
    _, span = _time_stream(sim, 6)
    assert span >= 5 * 0.040 * 0.9, span


def test_sse_payloads_helper_rejects_bad_framing():
    # The framing checks the tests above rely on.
    assert sse_payloads(b"data: {}\n\ndata: [DONE]\n\n") == ["{}", "[DONE]"]
    for bad in (b"data: {}\r\n\r\n", b"data: {}\n", b"event: x\ndata: {}\n\n"):
        with pytest.raises(AssertionError):
            sse_payloads(bad)


def test_stall_after_tokens_keeps_the_socket_open(sim):
    sim.configure(stall_after_tokens=2)
    with RawStream(sim.port, "POST", CHAT, _chat(sim, max_tokens=10, stream=True)) as stream:
        assert stream.read_head()[0] == 200
        events = [stream.read_event() for _ in range(3)]  # role chunk + 2 tokens
        assert all(e and e.startswith("data: {") for e in events), events
        stream.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            stream.read_event()
        assert not stream.eof


def test_refuse_closes_new_connections(sim):
    sim.configure(refuse=True)
    with RawStream(sim.port, "GET", "/v1/models") as stream:
        with pytest.raises(ConnectionError):
            stream.read_head()
