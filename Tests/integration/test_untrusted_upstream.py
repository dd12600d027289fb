"""Issue 10 end to end, the framing faults: an Engine in front of bad_upstream.py, a vLLM stand-in
that answers with interim 1xx responses, two responses to one request, a malformed status line, or
junk after its response. Every answer of the stand-in echoes its prompt ("echo: <prompt>"), so each
test checks that a client got its own answer and never a stale one from a pooled connection.
One Engine process (make_config's default), so every request shares its upstream connection pool."""

from __future__ import annotations

import pytest
import requests

from harness import Engine, chat_body, completion_body, sse_json

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
