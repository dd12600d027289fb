"""Issue 12, items 2, 3, 6 and 7 end to end: sampled answers are not cached (or shared) by default;
VLLM_URL with the shipped config sends requests without a model to the model the backend serves,
and a registry naming a model nobody serves is a clear warning and a clear error; U+0000 in a
prompt and in a cached answer; a replayed answer (hit, coalesced copy, stale entry) carries its
own id and created."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import ROOT, chat_body, completion_body, make_config, sse_json, wait_until

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat_text(r: requests.Response, stream: bool) -> str:
    """The first choice's content, plain or streamed."""
    if stream:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_json(r.content) if c["choices"])
    return r.json()["choices"][0]["message"]["content"]


def access_lines(eng) -> dict[str, dict]:
    """The access log's JSON lines by request id."""
    out = {}
    for line in eng.log_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            out[rec["request_id"]] = rec
    return out


# ---------------------------------------------------------------------------------------------
# Item 6: U+0000
# ---------------------------------------------------------------------------------------------


def test_a_prompt_with_nul_is_accepted(sim, engine_factory):
    assert requests.post(sim.url + CHAT, json=chat_body("a\u0000b"), timeout=10).status_code == 200
    eng = engine_factory(make_config([sim]))
    for path, body in ((CHAT, chat_body("nul \u0000 inside")), (COMPLETIONS, completion_body("nul \u0000 inside"))):
        for stream in (False, True):
            r = eng.post(path, json={**body, "stream": stream})
            assert r.status_code == 200, r.text
            if stream:
                sse_json(r.content)
    assert "\\u0000" in sim.stats()["last_request_body"]


@pytest.mark.parametrize("first_stream", [False, True])
def test_an_answer_with_nul_is_cached_and_replayed_in_both_forms(sim_factory, engine_factory, first_stream):
    sim = sim_factory("--echo")  # the answer starts with the prompt's text
    eng = engine_factory(make_config([sim]))
    body = chat_body("nul\u0000here", max_tokens=6)
    forms = [first_stream, False, True, not first_stream, first_stream]
    rs = [eng.post(CHAT, json={**body, "stream": s}) for s in forms]
    assert [r.status_code for r in rs] == [200] * len(rs)
    assert [r.headers["x-cache"] for r in rs] == ["MISS"] + ["HIT"] * (len(rs) - 1)
    texts = [chat_text(r, s) for r, s in zip(rs, forms)]
    assert texts[0].startswith("nul\u0000here") and texts == [texts[0]] * len(texts)
    assert sim.stats()["requests_total"] == 1
    # Each answer was logged as what the client received.
    time.sleep(0.2)
    log = access_lines(eng)
    assert [log[r.headers["x-request-id"]]["status"] for r in rs] == [200] * len(rs)
