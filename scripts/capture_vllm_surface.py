#!/usr/bin/env python3
"""Records what a real vLLM answers on the routes the simulator imitates beyond chat and
completions, into Tests/integration/captures/vllm-0.32.0.json (merged: each run replaces only the
cases it ran). test_sim_surface.py compares the simulator's answers with these, key by key.

usage: capture_vllm_surface.py BASE_URL RUNNER [--out FILE]
  RUNNER: generate | embed | classify — the case set for a server started with
    /work/shared/tools/vllm-cpu-up.sh PORT                      (generate)
    VLLM_EXTRA_ARGS="--runner pooling --convert embed" ...      (embed)
    VLLM_EXTRA_ARGS="--runner pooling --convert classify" ...   (classify)

Each case (name, method, path, body[, request headers]): the request, the status, the response headers (date dropped), and the body as JSON,
or for an SSE answer the events ({"event", "data"}) plus the raw body, so framing can be checked.
Standard library only (http.client), one request per connection, as a client would send it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "Tests" / "integration" / "captures" / "vllm-0.32.0.json"

M = "tiny"  # the served model name of vllm-cpu-up.sh

GENERATE = [
    ("version", "GET", "/version", None),
    ("ping_get", "GET", "/ping", None),
    ("ping_post", "POST", "/ping", None),
    ("load", "GET", "/load", None),
    ("tokenize_prompt", "POST", "/tokenize", {"model": M, "prompt": "hello world"}),
    ("tokenize_prompt_strs", "POST", "/tokenize",
     {"prompt": "hello world", "add_special_tokens": False, "return_token_strs": True}),
    ("tokenize_messages", "POST", "/tokenize", {"model": M, "messages": [{"role": "user", "content": "hi"}]}),
    ("tokenize_unknown_model", "POST", "/tokenize", {"model": "nope", "prompt": "hi"}),
    ("tokenize_no_input", "POST", "/tokenize", {"model": M}),
    ("tokenize_prompt_not_string", "POST", "/tokenize", {"model": M, "prompt": 5}),
    ("detokenize", "POST", "/detokenize", {"model": M, "tokens": [1, 287, 83, 338, 1229, 1373]}),
    ("detokenize_no_model", "POST", "/detokenize", {"tokens": [287, 83]}),
    ("detokenize_unknown_model", "POST", "/detokenize", {"model": "nope", "tokens": [1]}),
    ("detokenize_negative", "POST", "/detokenize", {"model": M, "tokens": [-1]}),
    ("responses_plain", "POST", "/v1/responses",
     {"model": M, "input": "hello world", "max_output_tokens": 8, "temperature": 0}),
    ("responses_messages", "POST", "/v1/responses",
     {"model": M, "input": [{"role": "user", "content": "hi"}], "instructions": "Be brief.",
      "max_output_tokens": 4, "temperature": 0.7, "metadata": {"a": "b"}, "user": "u1"}),
    ("responses_parts", "POST", "/v1/responses",
     {"input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
      "max_output_tokens": 2}),
    ("responses_stream", "POST", "/v1/responses",
     {"model": M, "input": "hello world", "max_output_tokens": 3, "temperature": 0, "stream": True}),
    ("responses_unknown_model", "POST", "/v1/responses", {"model": "nope", "input": "hi"}),
    ("responses_no_input", "POST", "/v1/responses", {"model": M}),
    ("responses_input_not_string_or_list", "POST", "/v1/responses", {"model": M, "input": 5}),
    ("responses_max_output_tokens_too_large", "POST", "/v1/responses",
     {"model": M, "input": "hi", "max_output_tokens": 100000}),
    ("responses_max_output_tokens_zero", "POST", "/v1/responses", {"model": M, "input": "hi", "max_output_tokens": 0}),
    ("responses_empty_list", "POST", "/v1/responses", {"model": M, "input": []}),
    ("responses_retrieve_unknown", "GET", "/v1/responses/resp_abc", None),
    ("embeddings_on_generate_model", "POST", "/v1/embeddings", {"model": M, "input": "hi"}),
]

EMBED = [
    ("embeddings_string", "POST", "/v1/embeddings", {"model": M, "input": "hello world"}),
    ("embeddings_list", "POST", "/v1/embeddings", {"model": M, "input": ["hello", "world"]}),
    ("embeddings_tokens", "POST", "/v1/embeddings", {"model": M, "input": [[1, 287, 83], [338]]}),
    ("embeddings_token_list", "POST", "/v1/embeddings", {"input": [1, 287, 83]}),
    ("embeddings_base64", "POST", "/v1/embeddings",
     {"model": M, "input": "hello world", "encoding_format": "base64"}),
    ("embeddings_dimensions", "POST", "/v1/embeddings", {"model": M, "input": "hello world", "dimensions": 8}),
    ("embeddings_unknown_model", "POST", "/v1/embeddings", {"model": "nope", "input": "hi"}),
    ("embeddings_no_input", "POST", "/v1/embeddings", {"model": M}),
    ("embeddings_empty_list", "POST", "/v1/embeddings", {"model": M, "input": []}),
    ("embeddings_bad_format", "POST", "/v1/embeddings", {"model": M, "input": "hi", "encoding_format": "hex"}),
    ("embeddings_messages", "POST", "/v1/embeddings", {"model": M, "messages": [{"role": "user", "content": "hi"}]}),
    ("pooling_embed", "POST", "/pooling", {"model": M, "input": "hello world"}),
    ("responses_on_pooling_model", "POST", "/v1/responses", {"model": M, "input": "hi"}),
    ("chat_on_pooling_model", "POST", "/v1/chat/completions",
     {"model": M, "messages": [{"role": "user", "content": "hi"}]}),
    ("tokenize_on_pooling_model", "POST", "/tokenize", {"model": M, "prompt": "hello world"}),
    ("version_on_pooling_model", "GET", "/version", None),
    ("embeddings_request_id", "POST", "/v1/embeddings", {"model": M, "input": "hi"}, {"X-Request-Id": "my-req-123"}),
    ("embeddings_prompt_too_long", "POST", "/v1/embeddings", {"model": M, "input": "hi " * 3000}),
    ("score_embed", "POST", "/score", {"model": M, "text_1": "hello", "text_2": ["world", "there"]}),
    ("score_embed_v1", "POST", "/v1/score", {"model": M, "text_1": "hello", "text_2": "world"}),
    ("rerank_embed", "POST", "/rerank",
     {"model": M, "query": "hello", "documents": ["world", "there", "hi"], "top_n": 2}),
    ("rerank_embed_v1", "POST", "/v1/rerank", {"model": M, "query": "hello", "documents": ["world", "there"]}),
    ("rerank_embed_v2", "POST", "/v2/rerank", {"model": M, "query": "hello", "documents": ["world", "there"]}),
    ("rerank_embed_unknown_model", "POST", "/rerank", {"model": "nope", "query": "hello", "documents": ["x"]}),
    ("classify_on_embed_model", "POST", "/classify", {"model": M, "input": "hi"}),
]

CLASSIFY = [
    ("classify", "POST", "/classify", {"model": M, "input": "hello world"}),
    ("classify_list", "POST", "/classify", {"model": M, "input": ["hello", "world"]}),
    # Score and rerank need a cross-encoder (one label); this two-label model does not serve them.
    ("score_on_classify_model", "POST", "/score", {"model": M, "text_1": "hello", "text_2": "world"}),
    ("pooling_classify", "POST", "/pooling", {"model": M, "input": "hello world"}),
    ("embeddings_on_classify_model", "POST", "/v1/embeddings", {"model": M, "input": "hi"}),
]

CASES = {"generate": GENERATE, "embed": EMBED, "classify": CLASSIFY}


def request(base: str, method: str, path: str, body: object | None, extra: dict | None = None) -> dict:
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    headers = dict(extra or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    out: dict = {
        "request": {"method": method, "path": path, "body": body, **({"headers": extra} if extra else {})},
        "status": r.status,
        "headers": {k.lower(): v for k, v in r.getheaders() if k.lower() != "date"},
    }
    ctype = r.getheader("content-type", "")
    if ctype.startswith("text/event-stream"):
        text = raw.decode()
        out["raw"] = text
        events = []
        for block in text.split("\n\n"):
            if not block:
                continue
            ev: dict = {}
            for line in block.split("\n"):
                field, _, value = line.partition(": ")
                ev[field] = json.loads(value) if field == "data" and value != "[DONE]" else value
            events.append(ev)
        out["events"] = events
    elif raw:
        try:
            out["body"] = json.loads(raw)
        except ValueError:
            out["text"] = raw.decode(errors="replace")
    else:
        out["body"] = None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("runner", choices=sorted(CASES))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    captured = json.loads(a.out.read_text()) if a.out.exists() else {}
    for name, method, path, body, *extra in CASES[a.runner]:
        c = request(a.base.rstrip("/"), method, path, body, *extra)
        c["runner"] = a.runner
        c["captured_at"] = time.strftime("%Y-%m-%d", time.gmtime())
        captured[name] = c
        shown = c.get("body", c.get("events", c.get("text")))
        print(f"{name}: {c['status']} {json.dumps(shown)[:160]}", file=sys.stderr)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(dict(sorted(captured.items())), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
