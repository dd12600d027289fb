"""vllm-sim's vLLM endpoints beyond chat and completions (issue 12): /v1/responses, /v1/embeddings and
the pooling family (/pooling, /classify, /score, /rerank), /tokenize, /detokenize, /version, /ping, /load.

Three kinds of checks:
- the official OpenAI SDK (`responses.create` plain and streamed, `embeddings.create`) against the sim;
- raw HTTP, for the framing and the small endpoints;
- drift: every case in captures/vllm-0.32.0.json (what a real vLLM 0.32.0 answered, recorded by
  scripts/capture_vllm_surface.py) is sent to the sim, and the answers must agree in status, content
  type, key order and value types (errors word for word), so a change on either side is caught.

With SIM_EXTERNAL_URL set (a real vLLM from shared/tools/vllm-cpu-up.sh, model SIM_EXTERNAL_MODEL=tiny),
the SDK tests run against it, and test_real_vllm_still_answers_as_captured replays the captured cases
of the runner it serves (SIM_EXTERNAL_RUNNER: generate (default), embed or classify).
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
from pathlib import Path

import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from conftest import SIM_EXTERNAL_URL
from harness import RawStream

CAPTURES = json.loads((Path(__file__).parent / "captures" / "vllm-0.32.0.json").read_text())
CAPTURED_MODEL = "tiny"
EXTERNAL_RUNNER = os.environ.get("SIM_EXTERNAL_RUNNER", "generate")
IS_EXTERNAL = bool(SIM_EXTERNAL_URL)

# A real vLLM serves either generation or pooling; the simulator serves both, so these captured
# 404s of "the other kind" do not apply to it.
SERVED_BY_SIM_ONLY = {
    "embeddings_on_generate_model", "responses_on_pooling_model", "chat_on_pooling_model",
    "embeddings_on_classify_model", "classify_on_embed_model", "score_on_classify_model",
}
# Errors vLLM words as one entry per alternative of a pydantic union (11 here); the simulator
# reports the first. Same status, type, param and code; the message differs.
APPROXIMATE_ERRORS = {"embeddings_bad_format"}
# Keys whose values are an enumeration, not content: they must be equal, not only of one type.
ENUM_KEYS = {"object", "type", "status", "role", "service_tier", "truncation", "tool_choice", "embed_dtype",
             "endianness", "incomplete_details", "model", "parallel_tool_calls", "background", "phase"}


@pytest.fixture
def gen_sim(sim):
    """The sim, or a real vLLM only when it runs a generative model."""
    if IS_EXTERNAL and EXTERNAL_RUNNER != "generate":
        pytest.skip(f"SIM_EXTERNAL_URL runs --runner {EXTERNAL_RUNNER}: no /v1/responses")
    return sim


def _client(sim) -> OpenAI:
    return OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0, timeout=30)


def _norm(v) -> float:
    return math.sqrt(sum(x * x for x in v))


# --------------------------------------------------------------------------------------------
# The OpenAI SDK
# --------------------------------------------------------------------------------------------


def test_sdk_responses_create(gen_sim):
    sim = gen_sim
    r = _client(sim).responses.create(model=sim.model, input="hello world", max_output_tokens=5, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.model == sim.model and r.max_output_tokens == 5 and r.temperature == 0.0
    assert len(r.output) == 1 and r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.output[0].id.startswith("msg_") and r.output[0].status == "completed"
    assert isinstance(r.output_text, str) and r.output_text
    assert r.usage.output_tokens == 5 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0


def test_sdk_responses_messages_and_instructions(gen_sim):
    sim = gen_sim
    client = _client(sim)
    r = client.responses.create(
        model=sim.model, instructions="Be brief.", max_output_tokens=4, temperature=0.7,
        input=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
               {"role": "user", "content": [{"type": "input_text", "text": "again"}]}],
        metadata={"run": "it"}, user="u1",
    )  # fmt: skip
    assert r.instructions == "Be brief." and r.metadata == {"run": "it"} and r.user == "u1"
    assert r.temperature == 0.7 and r.top_p == 1.0
    plain = client.responses.create(model=sim.model, input="hi", max_output_tokens=4)
    assert r.usage.input_tokens > plain.usage.input_tokens  # instructions and history are prompt
    assert plain.temperature == 1.0  # vLLM's default, reported


def test_sdk_responses_stream(gen_sim):
    sim = gen_sim
    events = list(_client(sim).responses.create(model=sim.model, input="hello world", max_output_tokens=4,
                                                temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert 1 <= len(deltas) <= 4 and len(types) == 8 + len(deltas)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    final = events[-1].response
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert final.output_text == text == events[-4].text
    assert final.usage.output_tokens == 4 and final.status == "incomplete"  # still "response.completed"
    assert {d.item_id for d in deltas} == {final.output[0].id}


def test_sdk_responses_errors(gen_sim):
    sim = gen_sim
    client = _client(sim)
    with pytest.raises(NotFoundError) as e:
        client.responses.create(model="nope", input="hi")
    assert e.value.body["message"].startswith("The model `nope` does not exist.")
    with pytest.raises(BadRequestError):
        client.responses.create(model=sim.model, input="hi", max_output_tokens=100000)
    with pytest.raises(NotFoundError) as e:
        client.responses.retrieve("resp_abc")
    assert e.value.body == {"message": "Response with id 'resp_abc' not found.", "type": "invalid_request_error",
                            "param": "response_id", "code": 404}


def _pooling_sim(sim_factory):
    """The sim, or a real vLLM only when it runs a pooling model."""
    if IS_EXTERNAL and EXTERNAL_RUNNER != "embed":
        pytest.skip("SIM_EXTERNAL_URL serves no embeddings (set SIM_EXTERNAL_RUNNER=embed if it does)")
    return sim_factory()


def test_sdk_embeddings_create(sim_factory):
    sim = _pooling_sim(sim_factory)
    client = _client(sim)
    r = client.embeddings.create(model=sim.model, input=["hello", "world"])  # the SDK asks for base64
    assert r.object == "list" and r.model == sim.model and [d.index for d in r.data] == [0, 1]
    assert all(d.object == "embedding" for d in r.data)
    assert len(r.data[0].embedding) == len(r.data[1].embedding) > 0
    assert all(abs(_norm(d.embedding) - 1) < 1e-5 for d in r.data)
    assert r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    floats = client.embeddings.create(model=sim.model, input="hello", encoding_format="float")
    again = client.embeddings.create(model=sim.model, input="hello", encoding_format="float")
    assert floats.data[0].embedding == again.data[0].embedding  # same input, same vector
    assert floats.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-7)


def test_embedding_of_token_ids_is_the_embedding_of_their_text(sim_factory):
    sim = _pooling_sim(sim_factory)
    tokens = sim.post("/tokenize", json={"prompt": "hello world"}).json()["tokens"]
    by_text = sim.post("/v1/embeddings", json={"input": "hello world"}).json()
    by_ids = sim.post("/v1/embeddings", json={"input": tokens}).json()
    assert by_ids["data"][0]["embedding"] == by_text["data"][0]["embedding"]
    assert by_ids["usage"]["prompt_tokens"] == by_text["usage"]["prompt_tokens"] == len(tokens)


def test_embeddings_encodings(sim_factory):
    sim = _pooling_sim(sim_factory)
    vec = sim.post("/v1/embeddings", json={"input": "hi"}).json()["data"][0]["embedding"]
    n = len(vec)
    b64 = sim.post("/v1/embeddings", json={"input": "hi", "encoding_format": "base64"}).json()["data"][0]["embedding"]
    assert list(struct.unpack(f"<{n}f", base64.b64decode(b64))) == vec
    big = sim.post("/v1/embeddings", json={"input": "hi", "encoding_format": "base64", "endianness": "big"}).json()
    assert list(struct.unpack(f">{n}f", base64.b64decode(big["data"][0]["embedding"]))) == vec
    half = sim.post("/v1/embeddings", json={"input": "hi", "encoding_format": "base64", "embed_dtype": "float16"}).json()
    assert struct.unpack(f"<{n}e", base64.b64decode(half["data"][0]["embedding"])) == pytest.approx(vec, abs=1e-3)
    r = sim.post("/v1/embeddings", json={"input": ["hi", "there"], "encoding_format": "bytes"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    meta = json.loads(r.headers["metadata"])
    assert [(d["index"], d["start"], d["end"], d["shape"]) for d in meta["data"]] == [(0, 0, 4 * n, [n]),
                                                                                       (1, 4 * n, 8 * n, [n])]
    assert list(struct.unpack(f"<{n}f", r.content[: 4 * n])) == vec
    only = sim.post("/v1/embeddings", json={"input": "hi", "encoding_format": "bytes_only"})
    assert "metadata" not in only.headers and only.content == r.content[: 4 * n]


def test_embeddings_dimensions(sim_factory):
    if IS_EXTERNAL:
        pytest.skip("needs vllm-sim's --matryoshka")
    plain = sim_factory("--model", CAPTURED_MODEL)
    r = plain.post("/v1/embeddings", json={"input": "hi", "dimensions": 8})
    assert r.status_code == 400 and r.json() == CAPTURES["embeddings_dimensions"]["body"] | {
        "error": {**CAPTURES["embeddings_dimensions"]["body"]["error"],
                  "message": "Model 'tiny' does not support Matryoshka embeddings; dimensions must be unset (received dimensions=8)."}}
    m = sim_factory("--matryoshka", "--embedding-size", 64)
    full = m.post("/v1/embeddings", json={"input": "hi"}).json()["data"][0]["embedding"]
    cut = m.post("/v1/embeddings", json={"input": "hi", "dimensions": 8}).json()["data"][0]["embedding"]
    assert len(full) == 64 and len(cut) == 8 and abs(_norm(cut) - 1) < 1e-6
    head = full[:8]
    assert cut == pytest.approx([x / _norm(head) for x in head], rel=1e-5)  # Matryoshka: a normalized prefix
    bad = m.post("/v1/embeddings", json={"input": "hi", "dimensions": 65})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "Model 'sim-model' only supports dimensions in range [1, 64], got 65."


def test_score_and_rerank(sim_factory):
    sim = _pooling_sim(sim_factory)
    score = sim.post("/score", json={"text_1": "hello", "text_2": ["world", "there", "hi"]}).json()
    scores = [d["score"] for d in score["data"]]
    assert [d["index"] for d in score["data"]] == [0, 1, 2] and all(-1 <= s <= 1 for s in scores)
    pairwise = sim.post("/v1/score", json={"queries": ["hello", "hello"], "documents": ["world", "there"]}).json()
    assert [d["score"] for d in pairwise["data"]] == scores[:2]
    rerank = sim.post("/v1/rerank", json={"query": "hello", "documents": ["world", "there", "hi"], "top_n": 2}).json()
    ranked = sorted(range(3), key=lambda i: -scores[i])[:2]
    assert [x["index"] for x in rerank["results"]] == ranked
    assert [x["relevance_score"] for x in rerank["results"]] == [scores[i] for i in ranked]
    assert [x["document"] for x in rerank["results"]] == [{"text": ["world", "there", "hi"][i], "multi_modal": None}
                                                          for i in ranked]
    assert sim.post("/v2/rerank", json={"query": "hello", "documents": ["world"]}).status_code == 200
    assert sim.post("/score", json={"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}).json()["error"]["message"] == \
        "Input lengths must be either 1:1, 1:N or N:N"


# --------------------------------------------------------------------------------------------
# Raw HTTP: the small endpoints and the responses stream's framing
# --------------------------------------------------------------------------------------------


def test_version_ping_load(sim):
    r = sim.get("/version")
    assert r.status_code == 200 and r.content == b'{"version":"0.32.0"}'
    assert r.headers["content-type"] == "application/json"
    for method in ("GET", "POST"):
        r = sim.get("/ping") if method == "GET" else sim.post("/ping")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
    r = sim.get("/load")
    assert r.status_code == 200 and isinstance(r.json()["server_load"], int)
    assert sim.post("/version").status_code == 405


def test_tokenize_and_detokenize(sim):
    t = sim.post("/tokenize", json={"prompt": "hello world"}).json()
    assert list(t) == ["count", "max_model_len", "tokens", "token_strs"]
    assert t["count"] == len(t["tokens"]) and t["tokens"][0] == 1 and t["token_strs"] is None
    strs = sim.post("/tokenize", json={"model": sim.model, "prompt": "hello world", "add_special_tokens": False,
                                       "return_token_strs": True}).json()
    assert strs["tokens"] == t["tokens"][1:] and len(strs["token_strs"]) == strs["count"]
    chat = sim.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    no_gen = sim.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}],
                                         "add_generation_prompt": False}).json()
    assert chat["count"] == no_gen["count"] + 2
    d = sim.post("/detokenize", json={"model": sim.model, "tokens": t["tokens"]})
    assert d.status_code == 200 and list(d.json()) == ["prompt"] and d.json()["prompt"].startswith("<s>")
    for path, body in (("/tokenize", {"model": "nope", "prompt": "hi"}), ("/detokenize", {"model": "nope", "tokens": [1]})):
        r = sim.post(path, json=body)
        assert r.status_code == 404 and r.json()["error"]["message"].startswith("The model `nope` does not exist.")


def test_responses_stream_framing(gen_sim):
    sim = gen_sim
    body = {"model": sim.model, "input": "hi", "max_output_tokens": 3, "temperature": 0, "stream": True}
    with RawStream(sim.port, "POST", "/v1/responses", body) as s:
        status, headers = s.read_head()
        assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "chunked" in headers["transfer-encoding"]
        blocks = []
        while (ev := s.read_event()) is not None:
            blocks.append(ev)
        assert s.complete
    for i, block in enumerate(blocks):
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: "), block
        payload = json.loads(data[len("data: "):])
        assert payload["type"] == event[len("event: "):] and payload["sequence_number"] == i
    assert "[DONE]" not in "".join(blocks)


# --------------------------------------------------------------------------------------------
# Drift: the simulator against what a real vLLM answered
# --------------------------------------------------------------------------------------------


def _kind(v) -> str:
    return "null" if v is None else type(v).__name__


def assert_same_shape(real, got, path: str = "$") -> None:
    """Same JSON types all the way down, same key order, same emptiness of lists; enumerations equal.
    Lists of scalars (vectors, token ids) are compared by their first element; lists of objects
    element by element."""
    assert _kind(real) == _kind(got), f"{path}: real {_kind(real)} {real!r:.80}, sim {_kind(got)} {got!r:.80}"
    if isinstance(real, dict):
        assert list(real) == list(got), f"{path}: keys differ:\n real {list(real)}\n sim  {list(got)}"
        for k in real:
            if k in ENUM_KEYS:
                assert real[k] == got[k] or k == "model", f"{path}.{k}: real {real[k]!r}, sim {got[k]!r}"
            assert_same_shape(real[k], got[k], f"{path}.{k}")
    elif isinstance(real, list):
        assert bool(real) == bool(got), f"{path}: real has {len(real)} items, sim {len(got)}"
        if real and isinstance(real[0], (dict, list)):
            assert len(real) == len(got), f"{path}: real has {len(real)} items, sim {len(got)}"
            for i, (a, b) in enumerate(zip(real, got)):
                assert_same_shape(a, b, f"{path}[{i}]")
        elif real:
            assert_same_shape(real[0], got[0], f"{path}[0]")


def _send(server, case: dict, model: str):
    req = case["request"]
    body = req["body"]
    if isinstance(body, dict) and body.get("model") == CAPTURED_MODEL:
        body = {**body, "model": model}
    if req["method"] == "GET":
        return server.get(req["path"], headers=req.get("headers"))
    return server.post(req["path"], json=body, headers=req.get("headers"))


def _sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text[:-2].split("\n\n"):
        event, data = block.split("\n")
        out.append((event[len("event: "):], json.loads(data[len("data: "):])))
    return out


def _collapse(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Runs of one event type as one (vLLM's detokenizer merges tokens, so delta counts differ)."""
    out: list[tuple[str, dict]] = []
    for name, data in events:
        if not out or out[-1][0] != name:
            out.append((name, data))
    return out


def compare_with_capture(name: str, case: dict, r, exact_errors: bool) -> None:
    assert r.status_code == case["status"], f"{name}: status {r.status_code}, captured {case['status']}: {r.text[:300]}"
    want_ctype = case["headers"].get("content-type")
    assert r.headers.get("content-type") == want_ctype, f"{name}: content-type {r.headers.get('content-type')}"
    assert ("metadata" in r.headers) == ("metadata" in case["headers"]), name
    if "metadata" in case["headers"]:
        assert_same_shape(json.loads(case["headers"]["metadata"]), json.loads(r.headers["metadata"]), f"{name}.metadata")
    if "events" in case:
        real, got = _collapse(_sse_events(case["raw"])), _collapse(_sse_events(r.text))
        assert [n for n, _ in real] == [n for n, _ in got], f"{name}: event sequence differs"
        for (n, a), (_, b) in zip(real, got):
            assert_same_shape(a, b, f"{name}:{n}")
        return
    body = case.get("body")
    if body is None or "text" in case:
        assert r.content == (case.get("text") or "").encode(), name
        return
    got = r.json()
    if r.status_code >= 400 and exact_errors and name not in APPROXIMATE_ERRORS:
        assert got == body, f"{name}: error differs:\n real {body}\n sim  {got}"
    assert_same_shape(body, got, name)


SIM_CASES = sorted(n for n in CAPTURES if n not in SERVED_BY_SIM_ONLY)


@pytest.mark.parametrize("name", SIM_CASES)
def test_sim_answers_as_the_real_vllm_did(sim_factory, name):
    if IS_EXTERNAL:
        pytest.skip("compares vllm-sim itself (see test_real_vllm_still_answers_as_captured)")
    # Served as "tiny", so that messages naming the model can be compared word for word.
    sim = sim_factory("--model", CAPTURED_MODEL)
    case = CAPTURES[name]
    compare_with_capture(name, case, _send(sim, case, CAPTURED_MODEL), exact_errors=True)


@pytest.mark.skipif(not IS_EXTERNAL, reason="needs SIM_EXTERNAL_URL (a real vLLM)")
@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_vllm_still_answers_as_captured(sim, name):
    case = CAPTURES[name]
    if case["runner"] != EXTERNAL_RUNNER:
        pytest.skip(f"captured with --runner {case['runner']}; SIM_EXTERNAL_RUNNER is {EXTERNAL_RUNNER}")
    compare_with_capture(name, case, _send(sim, case, sim.model), exact_errors=sim.model == CAPTURED_MODEL)
