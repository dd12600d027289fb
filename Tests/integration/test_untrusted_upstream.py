"""Issue 10 end to end, the framing faults: an Engine in front of bad_upstream.py, a vLLM stand-in
that answers with interim 1xx responses, two responses to one request, a malformed status line, or
junk after its response. Every answer of the stand-in echoes its prompt ("echo: <prompt>"), so each
test checks that a client got its own answer and never a stale one from a pooled connection.
make_config's default worker count (one per core): each worker keeps its own upstream pool."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from harness import Engine, chat_body, completion_body, metric_value, parse_metrics, sse_json, worker_pids

CHAT = "/v1/chat/completions"


def ask(eng: Engine, prompt: str, mode: str = "ok", stream: bool = False) -> requests.Response:
    return eng.post(CHAT, json=chat_body(prompt, x_bad_mode=mode, stream=stream))


def answer_text(r: requests.Response, stream: bool = False) -> str:
    """The assistant's content of a 200 chat answer (joined deltas for a stream)."""
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()["choices"][0]["message"]["content"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_json(r.content) if c["choices"])


def assert_own_answer(r: requests.Response, prompt: str, stream: bool = False) -> None:
    text = answer_text(r, stream)
    assert "STALE-SECOND" not in text, f"got the previous request's second response: {r.text[:300]}"
    assert text == "echo: " + prompt, f"answer for another prompt: {text!r} (asked {prompt!r})"


def assert_openai_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    return err


@pytest.mark.parametrize("mode", ["continue100", "early103"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_interim_response_is_skipped(bad_engine, mode, stream):
    prompt = f"interim {mode} {stream} alpha"
    r = ask(bad_engine, prompt, mode, stream)
    assert_own_answer(r, prompt, stream)
    # The final answer did not stay behind in the pooled connection for the next request.
    for i in range(3):
        p = f"after {mode} {stream} number {i}"
        assert_own_answer(ask(bad_engine, p), p)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_two_responses_to_one_request_never_reach_the_next_client(bad_engine, bad_upstream, stream):
    first = f"two responses {stream} first prompt"
    assert_own_answer(ask(bad_engine, first, "two_responses", stream), first, stream)
    for i in range(5):
        p = f"two responses {stream} follow-up {i}"
        assert_own_answer(ask(bad_engine, p, "ok"), p)
    assert bad_upstream.stats()["by_mode"] == {"two_responses": 1, "ok": 5}


def test_two_responses_on_completions(bad_engine):
    r = bad_engine.post("/v1/completions", json=completion_body("completion twice", x_bad_mode="two_responses"))
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "echo: completion twice"
    r = bad_engine.post("/v1/completions", json=completion_body("completion next", x_bad_mode="ok"))
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "echo: completion next"


def test_a_keep_alive_race_is_retried_and_leaves_nothing_in_flight(bad_upstream, engine_factory):
    """The upstream closes a pooled connection as the next request goes out on it (a keep-alive
    race): the Engine retries at once on a new connection, the client gets its own answer, and
    the first attempt is ended too. Before, it was replaced without an end: the backend's in-flight
    count stayed one up for good (and a half-open breaker's probe permit would never come back)."""
    from harness import bad_upstream_config
    # One process: the test is about its pool and its count (the gauge is per process); with
    # prefix_aware, the routing metrics include each backend's in-flight count.
    eng = engine_factory(bad_upstream_config([bad_upstream], server={"workers": 1}, routing={"policy": "prefix_aware"}))
    first = "keep-alive race: the first request"
    assert_own_answer(ask(eng, first), first)
    p = "keep-alive race: the second request"
    assert_own_answer(ask(eng, p, "close_if_reused"), p)
    # Closed once on the pooled connection, answered on a fresh one.
    assert bad_upstream.stats()["by_mode"] == {"ok": 1, "close_if_reused": 2}
    text = eng.get("/metrics").text
    assert metric_value(text, "engine_upstream_retries_total") == 0  # not counted as a retry
    assert [v for name, _, v in parse_metrics(text) if name == "engine_backend_in_flight"] == [0.0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_malformed_status_line_is_a_502(bad_engine, stream):
    r = ask(bad_engine, f"bad status line {stream}", "bad_status_line", stream)
    assert_openai_error(r, 502)
    p = f"after a bad status line {stream}"
    assert_own_answer(ask(bad_engine, p), p)


def test_garbage_after_the_response_does_not_reach_the_next_request(bad_engine, bad_upstream):
    first = "garbage after first prompt"
    assert_own_answer(ask(bad_engine, first, "garbage_after"), first)
    for i in range(3):
        p = f"after garbage {i}"
        assert_own_answer(ask(bad_engine, p), p)
    assert bad_upstream.stats()["by_mode"] == {"garbage_after": 1, "ok": 3}


# ---------------------------------------------------------------------------------------------
# Bodies and streams that are not vLLM's answer: a 502 (or one SSE error event), never cached
# ---------------------------------------------------------------------------------------------

def sse_payloads_of(r: requests.Response) -> list[str]:
    from harness import sse_payloads
    return sse_payloads(r.content)


def assert_one_error_event(r: requests.Response) -> None:
    """A stream that failed after its head: whole events, the last the only error, no [DONE]."""
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads_of(r)
    assert payloads and "[DONE]" not in payloads, payloads[-2:]
    errors = [p for p in payloads if p.startswith('{"error"')]
    assert len(errors) == 1 and payloads[-1] == errors[0], payloads[-2:]
    for p in payloads:
        json.loads(p)  # every relayed event is whole, valid JSON


BAD_BODIES = ["invalid_json_200", "json_array_200", "non_completion_object_200", "html_200", "no_content_204"]


@pytest.mark.parametrize("mode", BAD_BODIES)
def test_a_200_that_is_not_a_completion_is_a_502_and_never_cached(bad_engine, bad_upstream, mode):
    for attempt in range(2):
        r = ask(bad_engine, f"garbage {mode}", mode)
        err = assert_openai_error(r, 502)
        assert r.headers.get("x-cache") != "HIT"
        assert "without a valid completion" in err["message"] or "wrong form" in err["message"], err
    # Both requests reached the backend, each with its retries: nothing was stored.
    assert bad_upstream.stats()["by_mode"][mode] == 2 * 3
    p = f"after {mode}"
    assert_own_answer(ask(bad_engine, p), p)


BAD_STREAMS = ["sse_no_done", "sse_cut_mid_event", "sse_invalid_json_event", "sse_invalid_utf8_event"]


@pytest.mark.parametrize("mode", BAD_STREAMS)
def test_a_broken_stream_ends_with_one_error_event_and_is_never_cached(bad_engine, bad_upstream, mode):
    for attempt in range(2):
        r = ask(bad_engine, f"broken {mode}", mode, stream=True)
        assert_one_error_event(r)
        assert r.headers.get("x-cache") != "HIT"
    assert bad_upstream.stats()["by_mode"][mode] == 2
    # A plain request answered with a stream is the wrong form: a 502, not SSE.
    assert_openai_error(ask(bad_engine, f"plain {mode}", mode), 502)


def test_an_event_over_max_event_bytes_ends_the_stream(bad_upstream, engine_factory):
    from harness import bad_upstream_config
    eng = engine_factory(bad_upstream_config([bad_upstream], vllm={"max_event_bytes": 65536}))
    assert_one_error_event(ask(eng, "huge line", "sse_huge_line", stream=True))
    # Under the default limit (1 MiB) the same ~1 MB event is relayed whole.
    big = engine_factory(bad_upstream_config([bad_upstream]))
    r = ask(big, "huge line ok", "sse_huge_line", stream=True)
    assert sse_payloads_of(r)[-1] == "[DONE]"


def test_data_after_done_is_dropped(bad_engine):
    r = ask(bad_engine, "after done", "sse_data_after_done", stream=True)
    payloads = sse_payloads_of(r)
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    assert answer_text(r, True) == "echo: after done"


def test_the_usage_chunk_reaches_only_clients_that_asked(bad_engine):
    r = ask(bad_engine, "usage please not", "sse_usage_chunk", stream=True)
    assert not [c for c in sse_json(r.content) if c.get("usage")]
    body = chat_body("usage please", x_bad_mode="sse_usage_chunk", stream=True)
    body["stream_options"] = {"include_usage": True}
    r = bad_engine.post(CHAT, json=body)
    assert [c for c in sse_json(r.content) if c.get("usage") and c["choices"] == []]


FAULT_MODES = ["bad_status_line", "garbage_after", "two_responses", "invalid_json_200", "html_200",
               "no_content_204", "continue100", "sse_cut_mid_event", "sse_invalid_json_event",
               "sse_no_done", "close_if_reused"]


def test_upstream_faults_leave_no_connection_open(bad_engine):
    """Every upstream connection a fault ends is closed, not just let go of (an upstream connection
    keeps itself alive until its close(), so a path that forgot it would keep its descriptor): the
    workers hold no more descriptors after rounds of every fault, plain and streamed, than after
    good answers. A leak would be one descriptor per faulty request, 66 here."""
    workers = worker_pids(bad_engine.pid)
    assert workers, "no worker processes found"

    def open_fds() -> int:
        return sum(len(os.listdir(f"/proc/{p}/fd")) for p in workers)

    for i in range(10):
        assert_own_answer(ask(bad_engine, f"warm up {i}"), f"warm up {i}")
    time.sleep(0.3)
    before = open_fds()
    for rnd in range(3):
        for mode in FAULT_MODES:
            for stream in (False, True):
                ask(bad_engine, f"fault {mode} {stream} {rnd}", mode, stream)  # any status will do
        for i in range(3):
            p = f"after faults {rnd} {i}"
            assert_own_answer(ask(bad_engine, p), p)
    time.sleep(0.3)
    after = open_fds()
    assert after <= before + 6, f"open descriptors {before} -> {after} after {3 * 2 * len(FAULT_MODES)} faults"
