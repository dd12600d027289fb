"""Fixed upstream for bench/run.sh: writes the answers a cheap nginx serves in place of vLLM, and
that nginx's config, into a work directory.

  answer.json   one vLLM 0.32.0 chat.completion (every null field vLLM sends; ref/vllm-api.md §4)
  stream.sse    one whole vLLM chat stream of 50 chunk events: the role chunk, 48 content chunks
                (the last with finish_reason), the include_usage chunk ("choices":[]), then
                data: [DONE] (§5: LF only, one data line per event). The Engine always asks upstream
                for include_usage, so a real vLLM would send that usage chunk too.
  upstream.conf bench/upstream.conf.template with the ports, the directory and the two small
                control-plane bodies inlined (`return 200`; nginx limits an inline text to 4 KB)

Every JSON object is built with json.dumps, so the bodies are valid by construction.
Usage: python3 bench/upstream.py WORKDIR TEMPLATE JSON_PORT SSE_PORT
"""
import json
import sys

work, template, json_port, sse_port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

MODEL = "sim-model"
CREATED = 1795614816
FINGERPRINT = "vllm-0.32.0-bench"
PROMPT_TOKENS = 96  # about what a ~420 B chat request renders to
# Plain ASCII tokens: no quote, backslash or '$' (nginx would read '$' as a variable in `return`).
WORDS = ["Hello", " from", " the", " fixed", " bench", " upstream", ",", " one", " token", " at", " a", " time", "."]


def dumps(o):
    # vLLM's own separators: no spaces (ref/vllm-api.md shows compact JSON).
    return json.dumps(o, separators=(",", ":"))


def tokens(n):
    return [WORDS[i % len(WORDS)] for i in range(n)]


# --- The plain answer: 16 tokens (the bench requests ask for max_tokens 16) ---------------------
answer_tokens = tokens(16)
answer = {
    "id": "chatcmpl-bench00000000000001", "object": "chat.completion", "created": CREATED, "model": MODEL,
    "choices": [{"index": 0,
                 "message": {"role": "assistant", "content": "".join(answer_tokens), "refusal": None,
                             "annotations": None, "audio": None, "function_call": None, "reasoning": None},
                 "logprobs": None, "finish_reason": "length", "stop_reason": None, "token_ids": None,
                 "routed_experts": None}],
    "service_tier": None, "system_fingerprint": FINGERPRINT,
    "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS + len(answer_tokens),
              "completion_tokens": len(answer_tokens), "prompt_tokens_details": None,
              "completion_tokens_details": None},
    "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
    "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None,
}
answer_body = dumps(answer)

# --- The stream: 50 chunk events + [DONE] -------------------------------------------------------
CONTENT_CHUNKS = 48
sid = "chatcmpl-bench00000000000002"


def chunk(choices, **extra):
    c = {"id": sid, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL, "choices": choices}
    c.update(extra)
    return c


events = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
                prompt_token_ids=None, prompt_text=None)]
stream_tokens = tokens(CONTENT_CHUNKS)
for i, t in enumerate(stream_tokens):
    choice = {"index": 0, "delta": {"content": t}, "logprobs": None, "finish_reason": None, "token_ids": None}
    if i == CONTENT_CHUNKS - 1:
        # vLLM: the last content chunk carries finish_reason and stop_reason; with include_usage the
        # system_fingerprint moves to the usage chunk.
        choice = {"index": 0, "delta": {"content": t}, "logprobs": None, "finish_reason": "length",
                  "stop_reason": None, "token_ids": None}
    events.append(chunk([choice]))
events.append(chunk([], usage={"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS + CONTENT_CHUNKS,
                               "completion_tokens": CONTENT_CHUNKS}, system_fingerprint=FINGERPRINT))
assert len(events) == 50
stream_body = "".join("data: " + dumps(e) + "\n\n" for e in events) + "data: [DONE]\n\n"

# --- What the Engine's control plane asks for: /v1/models and /metrics (admission polls KV usage) ---
models_body = dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED,
                                                  "owned_by": "vllm", "root": MODEL, "parent": None,
                                                  "max_model_len": 2048, "permission": []}]})
labels = '{engine="0",model_name="sim-model"}'
metrics_body = "".join(f"# TYPE vllm:{n} gauge\nvllm:{n}{labels} 0.0\n"
                       for n in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"))

for name, body in (("answer.json", answer_body), ("stream.sse", stream_body)):
    with open(f"{work}/{name}", "w") as f:
        f.write(body)


def nginx_quoted(s):
    """The body as an nginx single-quoted string: nginx unescapes \\\\, \\' and \\n in quoted strings."""
    assert "$" not in s, "nginx would expand '$' in a return text"
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


conf = open(template).read()
for key, value in (("__DIR__", work), ("__JSON_PORT__", json_port), ("__SSE_PORT__", sse_port),
                   ("__MODELS__", nginx_quoted(models_body)), ("__METRICS__", nginx_quoted(metrics_body))):
    conf = conf.replace(key, value)
with open(f"{work}/upstream.conf", "w") as f:
    f.write(conf)
print(f"answer {len(answer_body)} B, stream {len(events)} events {len(stream_body)} B")
