"""Issue 12 item 1: vLLM's other routes are relayed, not 404. Against the simulator (/tokenize,
/detokenize, /version, /ping, /load) and bad_upstream.py (/v1/embeddings, /v1/responses plain and
stream, /v1/audio/* multipart), both with the default worker count: the answer is the backend's,
unchanged; auth applies; embeddings (deterministic) are cached; a relayed stream passes through
as vLLM framed it (the Responses API's `event:` lines, no [DONE]) and a cut one ends with one error
event; a multipart form is routed by its `model` field and relayed byte for byte."""

from __future__ import annotations

import base64
import os

import pytest
import requests

from harness import bad_upstream_config, make_config


@pytest.fixture
def relay_engine(bad_upstream, engine_factory):
    return engine_factory(bad_upstream_config([bad_upstream]))


def test_tokenize_and_detokenize_answer_as_the_backend_does(sim, engine):
    body = {"model": "sim-model", "prompt": "hello world"}
    direct = requests.post(sim.url + "/tokenize", json=body, timeout=10)
    via = engine.post("/tokenize", json=body)
    assert via.status_code == 200, via.text
    assert via.json() == direct.json()
    assert via.headers["x-request-id"]
    toks = via.json()["tokens"]
    d = engine.post("/detokenize", json={"model": "sim-model", "tokens": toks})
    assert d.status_code == 200, d.text
    assert d.json() == requests.post(sim.url + "/detokenize", json={"model": "sim-model", "tokens": toks}, timeout=10).json()


def test_get_routes_are_relayed(sim, engine):
    for path in ("/version", "/load", "/ping"):
        r = engine.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.content == requests.get(sim.url + path, timeout=10).content, path
    assert engine.get("/version").json() == {"version": "0.32.0"}
    head = requests.head(engine.url + "/version", timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_backend_errors_on_relayed_routes_come_back_as_they_are(sim, engine):
    # The simulator answers an unknown stored response with its 404; the Engine relays it.
    r = engine.get("/v1/responses/resp_does_not_exist")
    direct = requests.get(sim.url + "/v1/responses/resp_does_not_exist", timeout=10)
    assert r.status_code == direct.status_code
    assert r.content == direct.content


def test_wrong_method_and_unknown_paths(engine):
    r = engine.post("/version", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.json()["error"]["message"]
    r = engine.get("/tokenize")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert engine.post("/v1/nope", json={}).status_code == 404
    assert engine.get("/scale_elastic_ep").status_code == 404  # one server's admin route: not relayed


def test_invalid_json_on_a_relayed_route_is_a_400_before_any_backend(engine):
    r = engine.post("/tokenize", data=b'{"prompt": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"]
    r = engine.post("/v1/embeddings", json={"model": 5, "input": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_relayed_routes_need_the_api_key(sim, engine_factory):
    eng = engine_factory(make_config([sim], auth={"enabled": True, "api_keys": ["k1"]}))
    assert eng.post("/tokenize", json={"prompt": "hi"}).status_code == 401
    assert eng.get("/version").status_code == 401
    ok = eng.post("/tokenize", json={"prompt": "hi"}, headers={"authorization": "Bearer k1"})
    assert ok.status_code == 200, ok.text


def test_embeddings_are_relayed_and_cached(bad_upstream, relay_engine):
    body = {"model": "sim-model", "input": ["alpha", "beta"]}
    first = relay_engine.post("/v1/embeddings", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    data = first.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 4
    # Any worker: the store is shared (the default worker count runs the private Redis).
    for _ in range(4):
        again = relay_engine.post("/v1/embeddings", json=body)
        assert again.status_code == 200
        assert again.headers["x-cache"] == "HIT"
        assert again.json()["data"] == data
    assert bad_upstream.stats()["by_path"]["/v1/embeddings"] == 1
    other = relay_engine.post("/v1/embeddings", json={"model": "sim-model", "input": ["gamma"]})
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["data"][0]["embedding"] != data[0]["embedding"]


def test_responses_plain_and_stream_pass_through(bad_upstream, relay_engine):
    r = relay_engine.post("/v1/responses", json={"model": "sim-model", "input": "hi there"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response"
    assert r.json()["output"][0]["content"][0]["text"] == "echo: hi there"
    assert r.headers["x-cache"] == "BYPASS"
    s = relay_engine.post("/v1/responses", json={"model": "sim-model", "input": "streamed", "stream": True}, stream=True)
    assert s.status_code == 200
    assert s.headers["content-type"].startswith("text/event-stream")
    text = s.content.decode()
    events = [blk for blk in text.split("\n\n") if blk]
    assert [e.split("\n")[0] for e in events] == ["event: response.created", "event: response.output_text.delta",
                                                 "event: response.output_text.delta", "event: response.completed"]
    assert "[DONE]" not in text
    assert bad_upstream.stats()["by_path"]["/v1/responses"] == 2


def test_a_cut_relayed_stream_ends_with_one_error_event(relay_engine):
    s = relay_engine.post("/v1/responses", json={"model": "sim-model", "input": "x", "stream": True, "x_bad_mode": "cut"},
                          stream=True)
    assert s.status_code == 200
    text = s.content.decode()
    assert text.startswith("event: response.created")
    assert text.count('data: {"error"') == 1
    assert text.endswith("\n\n")


def test_a_multipart_audio_request_is_routed_by_its_model_field_and_relayed_whole(bad_upstream, relay_engine):
    files = {"file": ("a.wav", b"RIFF\x00\x01binary\r\n--not-a-boundary", "audio/wav")}
    r = relay_engine.post("/v1/audio/transcriptions", data={"model": "sim-model", "language": "en"}, files=files)
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["path"] == "/v1/audio/transcriptions"
    assert echo["content_type"].startswith("multipart/form-data; boundary=")
    assert "RIFF\x00\x01binary" in echo["body"]
    assert 'name="language"' in echo["body"]
    # A model no backend serves is refused by routing, like a generation's.
    r = relay_engine.post("/v1/audio/transcriptions", data={"model": "whisper-nope"}, files=files)
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "model"


# --- the official OpenAI SDK through the Engine, against the simulator's responses and embeddings ---


def test_sdk_responses_create_through_the_engine(sim, engine):
    client = engine.openai()
    r = client.responses.create(model="sim-model", input="hello world", max_output_tokens=5, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_")
    assert isinstance(r.output_text, str) and r.output_text
    assert r.usage.output_tokens == 5
    events = list(client.responses.create(model="sim-model", input="hello world", max_output_tokens=4,
                                          temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text
    # Without a model: routed by the registry, like a generation.
    assert client.responses.create(input="hi", max_output_tokens=2, model="").object == "response"


def test_sdk_embeddings_create_through_the_engine_is_cached(sim, engine):
    if os.environ.get("SIM_EXTERNAL_URL") and os.environ.get("SIM_EXTERNAL_RUNNER") != "embed":
        pytest.skip("the external vLLM serves no embeddings (SIM_EXTERNAL_RUNNER=embed when it does)")
    client = engine.openai()
    first = client.embeddings.with_raw_response.create(model="sim-model", input=["alpha", "beta"])
    assert first.headers["x-cache"] == "MISS"
    e = first.parse()
    assert [d.index for d in e.data] == [0, 1] and len(e.data[0].embedding) == 128
    direct = requests.post(sim.url + "/v1/embeddings", json={"model": "sim-model", "input": ["alpha", "beta"]}, timeout=10).json()
    assert [d.embedding for d in e.data] == [d["embedding"] for d in direct["data"]]
    again = client.embeddings.with_raw_response.create(model="sim-model", input=["alpha", "beta"])
    assert again.headers["x-cache"] == "HIT"
    assert [d.embedding for d in again.parse().data] == [d.embedding for d in e.data]
    b64 = client.embeddings.create(model="sim-model", input="alpha", encoding_format="base64")
    assert len(base64.b64decode(b64.data[0].embedding)) == 128 * 4  # float32s
