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
# Item 2: cache.deterministic_only is on by default
# ---------------------------------------------------------------------------------------------


def test_the_simulator_samples_like_vllm(sim):
    def texts(body, n=3):
        return [requests.post(sim.url + CHAT, json=body, timeout=10).json()["choices"][0]["message"]["content"]
                for _ in range(n)]

    assert len(set(texts(chat_body("sample", temperature=1)))) == 3
    assert len(set(texts(chat_body("sample", temperature=None)))) == 3  # vLLM's default samples too
    assert len(set(texts(chat_body("sample", temperature=0)))) == 1
    assert len(set(texts(chat_body("sample", temperature=1, seed=5)))) == 1


def test_sampled_requests_are_not_cached_by_default(sim, engine_factory):
    eng = engine_factory(make_config([sim]))  # no cache section: the defaults
    body = chat_body("tell me something", temperature=1)
    rs = [eng.post(CHAT, json=body) for _ in range(3)]
    assert [r.status_code for r in rs] == [200] * 3
    # Not cacheable, so neither looked up nor stored: BYPASS (docs/api.md), never HIT.
    assert [r.headers["x-cache"] for r in rs] == ["BYPASS"] * 3
    assert len({chat_text(r, False) for r in rs}) == 3, "each request gets its own sample, as from vLLM"
    # Without a temperature (vLLM's default sampling) and as a stream: the same.
    body = chat_body("tell me more", temperature=None, stream=True)
    rs = [eng.post(CHAT, json=body) for _ in range(2)]
    assert [r.headers["x-cache"] for r in rs] == ["BYPASS"] * 2
    assert chat_text(rs[0], True) != chat_text(rs[1], True)
    assert sim.stats()["requests_total"] == 5


def test_identical_sampled_requests_in_flight_are_not_shared(sim_factory, engine_factory):
    sim = sim_factory("--ttft-ms", 300)
    eng = engine_factory(make_config([sim]))
    body = chat_body("at the same time", temperature=0.7)
    with ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda _: requests.post(eng.url + CHAT, json=body, timeout=10), range(4)))
    assert all(r.status_code == 200 and "x-coalesced" not in r.headers for r in rs)
    assert sim.stats()["requests_total"] == 4
    assert len({chat_text(r, False) for r in rs}) == 4


@pytest.mark.parametrize("extra", [
    {"temperature": 0},
    {"temperature": 1, "seed": 7},
    {"temperature": 0.8, "seed": 7, "n": 2, "top_p": 0.9},  # a seeded sampler repeats itself, n choices too
])
def test_deterministic_requests_are_cached(sim, engine_factory, extra):
    eng = engine_factory(make_config([sim]))
    body = {**chat_body("same again", temperature=None), **extra}
    r1 = eng.post(CHAT, json=body)
    r2 = eng.post(CHAT, json=body)
    assert (r1.headers["x-cache"], r2.headers["x-cache"]) == ("MISS", "HIT")
    assert [c["message"] for c in r2.json()["choices"]] == [c["message"] for c in r1.json()["choices"]]
    assert sim.stats()["requests_total"] == 1


def test_caching_sampled_answers_is_the_operators_choice(sim, engine_factory):
    eng = engine_factory(make_config([sim], cache={"deterministic_only": False}))
    body = chat_body("cache it anyway", temperature=1)
    r1, r2 = eng.post(CHAT, json=body), eng.post(CHAT, json=body)
    assert (r1.headers["x-cache"], r2.headers["x-cache"]) == ("MISS", "HIT")
    assert chat_text(r1, False) == chat_text(r2, False)
    assert sim.stats()["requests_total"] == 1


# ---------------------------------------------------------------------------------------------
# Item 3: a request without a model, whatever model_registry says
# ---------------------------------------------------------------------------------------------


def wait_for_registry_warnings(eng, text: str) -> None:
    """Until every worker has learned the backends' models and logged `text` once."""
    def ready():
        log = eng.log_text()
        workers = max(1, log.count("] worker "))
        return log.count(text) >= workers
    wait_until(ready, timeout=10, what=f"{text!r} logged by every worker")


def test_vllm_url_with_the_shipped_config_serves_the_backends_model(sim_factory, engine_factory):
    sim = sim_factory("--model", "tiny")  # not the shipped registry's sim-model
    shipped = (ROOT / "configs" / "default.yaml").read_text()
    eng = engine_factory(shipped, env={"VLLM_URL": sim.url})
    warning = ("model_registry.fast_model `sim-model` is not served by any backend (served: tiny): "
               "requests without a model go to `tiny`, the only model served")
    wait_for_registry_warnings(eng, warning)
    assert "model_registry.fallback_model `sim-model` is not served by any backend (served: tiny): no fallback" in eng.log_text()
    # The README's request: no model.
    r = eng.post(CHAT, json={"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny" and r.headers["x-routed-model"] == "tiny"
    r = eng.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 4, "stream": True})
    assert r.status_code == 200 and all(c["model"] == "tiny" for c in sse_json(r.content))
    # Naming a model the backend does not serve: vLLM's 404, naming what is served.
    r = eng.post(CHAT, json=chat_body("x", model="sim-model"))
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "`sim-model`" in err["message"] and "tiny" in err["message"]
    assert sim.stats()["requests_total"] == 2


def test_an_unserved_default_among_several_models_is_a_clear_404(sim_factory, engine_factory):
    a = sim_factory("--model", "a")
    b = sim_factory("--model", "b")
    eng = engine_factory(make_config([a, b], model_registry={"fallback_model": None}))
    wait_for_registry_warnings(eng, "model_registry.fast_model `sim-model` is not served by any backend (served: a, b)")
    r = eng.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "`sim-model`" in err["message"] and "Served models: a, b." in err["message"]
    assert a.stats()["requests_total"] == 0 and b.stats()["requests_total"] == 0
    # Named, either model is served as usual.
    assert eng.post(CHAT, json=chat_body("hi", model="b")).json()["model"] == "b"


def test_an_unserved_default_with_a_served_fallback_takes_the_fallback(sim_factory, engine_factory):
    a = sim_factory("--model", "a")
    b = sim_factory("--model", "b")
    eng = engine_factory(make_config([a, b], model_registry={"fallback_model": "b"}))
    wait_for_registry_warnings(eng, "requests routed to it are answered by the fallback model `b`")
    r = eng.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "b" and r.headers["x-fallback"] == "model"


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


# ---------------------------------------------------------------------------------------------
# Item 7: a replay is a response of its own
# ---------------------------------------------------------------------------------------------


def test_a_hit_has_its_own_id_and_created(sim, engine_factory):
    eng = engine_factory(make_config([sim]))
    body = chat_body("who answers")
    r1 = eng.post(CHAT, json=body, headers={"X-Request-Id": "first-req"})
    assert r1.headers["x-cache"] == "MISS"
    first = r1.json()
    assert first["id"] == "chatcmpl-first-req"  # vLLM's (and the simulator's) form
    time.sleep(1.1)
    r2 = eng.post(CHAT, json=body, headers={"X-Request-Id": "second-req"})
    assert r2.headers["x-cache"] == "HIT"
    hit = r2.json()
    assert hit["id"] == "chatcmpl-second-req"
    assert first["created"] < hit["created"] <= time.time() + 1
    assert hit["choices"] == first["choices"] and hit["usage"] == first["usage"]
    # A streamed replay: every chunk.
    r3 = eng.post(CHAT, json={**body, "stream": True}, headers={"X-Request-Id": "third-req"})
    assert r3.headers["x-cache"] == "HIT"
    chunks = sse_json(r3.content)
    assert {c["id"] for c in chunks} == {"chatcmpl-third-req"}
    assert len({c["created"] for c in chunks}) == 1 and chunks[0]["created"] >= first["created"]
    # No X-Request-Id: the Engine's own id, the one in the response header.
    r4 = eng.post(CHAT, json=body)
    assert r4.headers["x-cache"] == "HIT" and r4.json()["id"] == "chatcmpl-" + r4.headers["x-request-id"]
    # An id that JSON must escape is written as a JSON string.
    odd = 'q"uote\\back'
    r5 = eng.post(CHAT, json=body, headers={"X-Request-Id": odd})
    assert r5.headers["x-cache"] == "HIT" and r5.json()["id"] == "chatcmpl-" + odd


@pytest.mark.parametrize("stored_stream", [False, True])
def test_completion_hits_have_their_own_id_in_both_forms(sim, engine_factory, stored_stream):
    eng = engine_factory(make_config([sim]))
    body = completion_body("complete me")
    first = eng.post(COMPLETIONS, json={**body, "stream": stored_stream}, headers={"X-Request-Id": "c-0"})
    assert first.headers["x-cache"] == "MISS"
    plain = eng.post(COMPLETIONS, json=body, headers={"X-Request-Id": "c-1"})
    assert plain.headers["x-cache"] == "HIT" and plain.json()["id"] == "cmpl-c-1"
    stream = eng.post(COMPLETIONS, json={**body, "stream": True}, headers={"X-Request-Id": "c-2"})
    assert stream.headers["x-cache"] == "HIT"
    assert {c["id"] for c in sse_json(stream.content)} == {"cmpl-c-2"}


@pytest.mark.parametrize("stream", [False, True])
def test_coalesced_followers_have_their_own_ids(sim_factory, engine_factory, stream):
    sim = sim_factory("--ttft-ms", 300, "--itl-ms", 20)
    eng = engine_factory(make_config([sim]))
    body = chat_body("shared answer", stream=stream)

    def one(i):
        time.sleep(0.05 * i)  # the first leads; the others find its flight
        rid = f"follow-{i}"
        r = requests.post(eng.url + CHAT, json=body, headers={"X-Request-Id": rid}, timeout=15)
        assert r.status_code == 200, r.text
        ids = {c["id"] for c in sse_json(r.content)} if stream else {r.json()["id"]}
        return rid, ids, r.headers.get("x-coalesced"), chat_text(r, stream)

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(one, range(4)))
    assert sim.stats()["requests_total"] == 1
    assert sum(1 for _, _, coalesced, _ in results if coalesced == "true") == 3
    for rid, ids, _, _ in results:
        assert ids == {"chatcmpl-" + rid}
    assert len({text for _, _, _, text in results}) == 1


def test_a_stale_replay_has_its_own_id(sim, engine_factory):
    eng = engine_factory(make_config([sim], cache={"ttl_seconds": 0.3, "stale_ttl_seconds": 60},
                                     vllm={"retry_count": 0}, model_registry={"fallback_model": None}))
    body = chat_body("stale but mine", max_tokens=3)
    first = eng.post(CHAT, json=body, headers={"X-Request-Id": "fresh-1"}).json()
    time.sleep(0.5)
    sim.configure(error_rate=1.0)
    r = eng.post(CHAT, json=body, headers={"X-Request-Id": "stale-1"})
    assert r.status_code == 200 and r.headers["x-cache"] == "STALE"
    assert r.json()["id"] == "chatcmpl-stale-1" and r.json()["created"] >= first["created"]
    assert r.json()["choices"] == first["choices"]
