#!/usr/bin/env python3
"""A misbehaving stand-in for vLLM (issue 10, "the upstream is untrusted"). Standard library only.

    bad_upstream.py --mode NAME [--port N] [--host 127.0.0.1] [--model sim-model] [--itl-ms 0] [--models-delay-ms 0]

Speaks just enough of vLLM 0.32's API (shapes from shared/ref/vllm-api.md): GET /health (200, empty),
GET /v1/models (one model, "sim-model" by default), GET /metrics (vLLM-like gauges, KV usage 0.0),
POST /tokenize, and POST /v1/chat/completions and /v1/completions, whose answer is chosen by a mode:
`--mode` for every request, overridden per request by the header `x-bad-mode: NAME` or, because the
Engine does not forward client headers upstream, by a body field `"x_bad_mode": "NAME"` (vLLM ignores
unknown fields). GET /bad/stats returns {"requests_total", "by_mode": {NAME: count}}.

Every well-formed answer echoes the prompt: the content is "echo: <prompt>" (the last user message's
text for chat, the prompt for completions), so a test can tell whose answer it received.

Modes (HTTP/1.1 keep-alive unless said otherwise):
  ok                        valid answer; SSE when the request has "stream": true, JSON otherwise
  continue100               "HTTP/1.1 100 Continue" then the ok answer, in one write
  early103                  "HTTP/1.1 103 Early Hints" (with a Link header) then the ok answer
  two_responses             the ok answer immediately followed (same write) by a second complete 200
                            whose content is 'STALE-SECOND'
  bad_status_line           "HTTX/1.1 200 OK" and an otherwise valid JSON answer
  garbage_after             the ok answer followed (same write) by junk bytes
  invalid_json_200          200 application/json, a truncated JSON body
  json_array_200            200 application/json, [1,2,3]
  non_completion_object_200 200 application/json, {"hello":1}
  html_200                  200 text/html
  no_content_204            204, no body
  sse_ok                    a valid stream whatever the request asked: chunks echoing the prompt, [DONE]
  sse_no_done               a few valid events, then the chunked body ends properly without [DONE]
  sse_cut_mid_event         one valid event, then `data: {"id"`, then the chunked body ends properly
                            and the connection closes (the head says connection: close)
  sse_invalid_json_event    a valid event, `data: {not json}`, more valid events, [DONE]
  sse_invalid_utf8_event    a valid event, an event with bytes FF FE inside a JSON string, [DONE]
  sse_huge_line             one event whose data line is about 1 MB (valid JSON), then [DONE]
  sse_data_after_done       a valid stream, [DONE], then one more data event
  sse_usage_chunk           a valid stream with a usage chunk ({"choices":[],"usage":{...}}) before [DONE]
  close_if_reused           on a connection that already answered a request: close it without a word
                            (a keep-alive race, as a server's idle timeout makes one); on a fresh one: ok

Relayed routes (issue 12), counted in /bad/stats "by_path":
  POST /v1/embeddings       an embeddings list (vLLM's shape), one vector per input, derived from it
  POST /v1/responses        a Responses API object, or with "stream": true its `event:`/`data:` SSE
                            stream (no [DONE]); "x_bad_mode": "cut" ends the stream mid-way by closing
                            the connection without the chunked terminator
  POST /v1/audio/*          JSON echo of what arrived: method, path, content type, body length, and the
                            multipart body's bytes as latin-1 text
  GET  /version             {"version": "0.32.0"}

Prints "ready HOST:PORT" (flushed) once listening; exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import time

FINGERPRINT = "vllm-0.32.0-bad-upstream"
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class Ctx:
    """One generation request."""

    def __init__(self, path: str, headers: dict[str, str], body: dict, model: str):
        self.path = path
        self.headers = headers
        self.body = body
        self.kind = "chat" if path.endswith("/chat/completions") else "completion"
        self.model = body.get("model") or model
        self.stream = body.get("stream") is True
        self.prompt = prompt_text(self.kind, body)
        self.content = "echo: " + self.prompt
        rid = headers.get("x-request-id") or os.urandom(8).hex()
        self.id = ("chatcmpl-" if self.kind == "chat" else "cmpl-") + rid
        self.created = int(time.time())
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        self.include_usage = self.stream and include_usage
        # Requests this connection answered before this one (serve() counts them).
        self.served_before = int(headers.get(":served", "0"))


def prompt_text(kind: str, body: dict) -> str:
    if kind == "chat":
        msgs = body.get("messages") or []
        users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"] or msgs
        if not users or not isinstance(users[-1], dict):
            return ""
        c = users[-1].get("content")
        if isinstance(c, list):
            return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        return c if isinstance(c, str) else json.dumps(c)
    p = body.get("prompt")
    if isinstance(p, list):
        return " ".join(x if isinstance(x, str) else json.dumps(x) for x in p)
    return p if isinstance(p, str) else json.dumps(p)


def usage(ctx: Ctx, completion: str | None = None) -> dict:
    pt = max(1, len(ctx.prompt.split()))
    ct = max(1, len((ctx.content if completion is None else completion).split()))
    return {"prompt_tokens": pt, "total_tokens": pt + ct, "completion_tokens": ct,
            "prompt_tokens_details": None, "completion_tokens_details": None}


def head(ctx: Ctx, obj: str) -> dict:
    """The leading fields of every answer and stream event, in vLLM's order."""
    return {"id": ctx.id, "object": obj, "created": ctx.created, "model": ctx.model}


def completion_object(ctx: Ctx, content: str | None = None) -> dict:
    """vLLM's non-streaming answer (chat.completion or text_completion)."""
    content = ctx.content if content is None else content
    if ctx.kind == "chat":
        return {**head(ctx, "chat.completion"), "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None, "annotations": None,
                        "audio": None, "function_call": None, "reasoning": None},
            "logprobs": None, "finish_reason": "stop", "stop_reason": None, "token_ids": None,
            "routed_experts": None}],
            "service_tier": None, "system_fingerprint": FINGERPRINT, "usage": usage(ctx, content),
            "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
            "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
    return {**head(ctx, "text_completion"), "choices": [{
        "index": 0, "text": content, "logprobs": None, "finish_reason": "stop", "stop_reason": None,
        "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None}],
        "service_tier": None, "system_fingerprint": FINGERPRINT, "usage": usage(ctx, content),
        "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


def stream_chunks(ctx: Ctx) -> list[dict]:
    """vLLM's stream events for the echo answer, one per word (without [DONE] or a usage chunk)."""
    words = ctx.content.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    out: list[dict] = []
    if ctx.kind == "chat":
        out.append({**head(ctx, "chat.completion.chunk"), "choices": [{
            "index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
            "prompt_token_ids": None, "prompt_text": None})
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            choice = {"index": 0, "delta": {"content": p}, "logprobs": None,
                      "finish_reason": "stop" if last else None, "token_ids": None}
            if last:
                choice["stop_reason"] = None
            ev = {**head(ctx, "chat.completion.chunk"), "choices": [choice]}
            if last and not ctx.include_usage:
                ev["system_fingerprint"] = FINGERPRINT
            out.append(ev)
    else:
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            ev = {**head(ctx, "text_completion"), "choices": [{
                "index": 0, "text": p, "logprobs": None, "finish_reason": "stop" if last else None,
                "stop_reason": None, "prompt_token_ids": None, "token_ids": None}]}
            if last and not ctx.include_usage:
                ev["system_fingerprint"] = FINGERPRINT
            out.append(ev)
    return out


def with_text(ev: dict, ctx: Ctx, text: str) -> dict:
    """A copy of stream event `ev` whose content (chat) or text (completions) is `text`."""
    ev = json.loads(json.dumps(ev))
    if ctx.kind == "chat":
        ev["choices"][0]["delta"]["content"] = text
    else:
        ev["choices"][0]["text"] = text
    return ev


def usage_chunk(ctx: Ctx) -> dict:
    obj = "chat.completion.chunk" if ctx.kind == "chat" else "text_completion"
    u = usage(ctx)
    return {**head(ctx, obj), "choices": [],
            "usage": {k: u[k] for k in ("prompt_tokens", "total_tokens", "completion_tokens")},
            "system_fingerprint": FINGERPRINT}


# --- bytes on the wire ---------------------------------------------------------------------------


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def response(status: int, reason: str, body: bytes = b"", content_type: str | None = "application/json",
             extra: list[tuple[str, str]] | None = None, status_line: str | None = None) -> bytes:
    lines = [status_line or f"HTTP/1.1 {status} {reason}", "server: uvicorn"]
    if content_type is not None:
        lines.append(f"content-type: {content_type}")
    if status not in (204, 304) and not 100 <= status < 200:
        lines.append(f"content-length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_response(obj, status: int = 200, reason: str = "OK") -> bytes:
    return response(status, reason, dumps(obj))


def error_response(status: int, reason: str, message: str, type_: str) -> bytes:
    return json_response({"error": {"message": message, "type": type_, "param": None, "code": status}}, status, reason)


def sse_head(close: bool = False) -> bytes:
    extra = "connection: close\r\n" if close else ""
    return (b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n" + extra.encode() + b"\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def event(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else dumps(obj)) + b"\n\n"


DONE = event(b"[DONE]")


def ok_answer(ctx: Ctx, content: str | None = None) -> bytes:
    """The whole ok answer as one byte string (JSON; SSE when the request streams)."""
    if not ctx.stream:
        return json_response(completion_object(ctx, content))
    events = [event(c) for c in stream_chunks(ctx)]
    if ctx.include_usage:
        events.append(event(usage_chunk(ctx)))
    events.append(DONE)
    return sse_head() + b"".join(chunk(e) for e in events) + LAST_CHUNK


# --- modes: each writes one answer and says whether the connection stays open --------------------


class Server:
    def __init__(self, mode: str, model: str, itl: float):
        self.mode = mode
        self.model = model
        self.itl = itl
        self.models_delay = 0.0
        self.requests_total = 0
        self.by_mode: dict[str, int] = {}
        self.by_path: dict[str, int] = {}
        self.connections: set[asyncio.Task] = set()

    async def send_events(self, w: asyncio.StreamWriter, events: list[bytes]) -> None:
        for e in events:
            w.write(chunk(e))
            await w.drain()
            if self.itl:
                await asyncio.sleep(self.itl)

    async def mode_ok(self, ctx: Ctx, w) -> bool:
        if not ctx.stream:
            w.write(ok_answer(ctx))
            return True
        w.write(sse_head())
        events = [event(c) for c in stream_chunks(ctx)]
        if ctx.include_usage:
            events.append(event(usage_chunk(ctx)))
        await self.send_events(w, events + [DONE])
        w.write(LAST_CHUNK)
        return True

    async def mode_close_if_reused(self, ctx: Ctx, w) -> bool:
        if ctx.served_before:
            return False
        return await self.mode_ok(ctx, w)

    async def mode_continue100(self, ctx: Ctx, w) -> bool:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok_answer(ctx))
        return True

    async def mode_early103(self, ctx: Ctx, w) -> bool:
        w.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" + ok_answer(ctx))
        return True

    async def mode_two_responses(self, ctx: Ctx, w) -> bool:
        w.write(ok_answer(ctx) + ok_answer(ctx, content="STALE-SECOND"))
        return True

    async def mode_bad_status_line(self, ctx: Ctx, w) -> bool:
        w.write(response(200, "OK", dumps(completion_object(ctx)), status_line="HTTX/1.1 200 OK"))
        return True

    async def mode_garbage_after(self, ctx: Ctx, w) -> bool:
        w.write(ok_answer(ctx) + b"\x00\x01GARBAGE after the response\r\n\r\n")
        return True

    async def mode_invalid_json_200(self, ctx: Ctx, w) -> bool:
        w.write(response(200, "OK", b'{"id":"' + ctx.id.encode() + b'","object":"chat.completion","choices":[{"index":0,'))
        return True

    async def mode_json_array_200(self, ctx: Ctx, w) -> bool:
        w.write(response(200, "OK", b"[1,2,3]"))
        return True

    async def mode_non_completion_object_200(self, ctx: Ctx, w) -> bool:
        w.write(response(200, "OK", b'{"hello":1}'))
        return True

    async def mode_html_200(self, ctx: Ctx, w) -> bool:
        w.write(response(200, "OK", b"<html><body><h1>Welcome to nginx!</h1></body></html>\n", "text/html"))
        return True

    async def mode_no_content_204(self, ctx: Ctx, w) -> bool:
        w.write(response(204, "No Content", content_type=None))
        return True

    async def mode_sse_ok(self, ctx: Ctx, w) -> bool:
        ctx.stream = True
        return await self.mode_ok(ctx, w)

    async def mode_sse_no_done(self, ctx: Ctx, w) -> bool:
        w.write(sse_head())
        await self.send_events(w, [event(c) for c in stream_chunks(ctx)[:3]])
        w.write(LAST_CHUNK)
        return True

    async def mode_sse_cut_mid_event(self, ctx: Ctx, w) -> bool:
        w.write(sse_head(close=True))
        await self.send_events(w, [event(stream_chunks(ctx)[0]), b'data: {"id"'])
        w.write(LAST_CHUNK)
        return False

    async def mode_sse_invalid_json_event(self, ctx: Ctx, w) -> bool:
        chunks = [event(c) for c in stream_chunks(ctx)]
        w.write(sse_head())
        await self.send_events(w, chunks[:1] + [event(b"{not json}")] + chunks[1:] + [DONE])
        w.write(LAST_CHUNK)
        return True

    async def mode_sse_invalid_utf8_event(self, ctx: Ctx, w) -> bool:
        chunks = stream_chunks(ctx)
        bad = dumps(with_text(chunks[-1], ctx, "@@BAD@@")).replace(b"@@BAD@@", b"bad \xff\xfe bytes")
        w.write(sse_head())
        await self.send_events(w, [event(chunks[0]), event(bad), DONE])
        w.write(LAST_CHUNK)
        return True

    async def mode_sse_huge_line(self, ctx: Ctx, w) -> bool:
        data = event(with_text(stream_chunks(ctx)[-1], ctx, "x" * (1 << 20)))
        w.write(sse_head())
        # The one line spans many chunks, as a real server's writes would.
        for i in range(0, len(data), 64 * 1024):
            w.write(chunk(data[i:i + 64 * 1024]))
            await w.drain()
        await self.send_events(w, [DONE])
        w.write(LAST_CHUNK)
        return True

    async def mode_sse_data_after_done(self, ctx: Ctx, w) -> bool:
        chunks = [event(c) for c in stream_chunks(ctx)]
        w.write(sse_head())
        await self.send_events(w, chunks + [DONE, event(stream_chunks(ctx)[-1])])
        w.write(LAST_CHUNK)
        return True

    async def mode_sse_usage_chunk(self, ctx: Ctx, w) -> bool:
        ctx.stream = True
        ctx.include_usage = True
        return await self.mode_ok(ctx, w)

    # --- HTTP plumbing ---------------------------------------------------------------------------

    def metrics(self) -> bytes:
        labels = f'engine="0",model_name="{self.model}"'
        text = "".join(
            f"# HELP vllm:{n} {h}\n# TYPE vllm:{n} gauge\nvllm:{n}{{{labels}}} 0.0\n"
            for n, h in (("num_requests_running", "Number of requests in model execution batches."),
                         ("num_requests_waiting", "Number of requests waiting to be processed."),
                         ("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")))
        return response(200, "OK", text.encode(), "text/plain; version=1.0.0; charset=utf-8")

    def models(self) -> bytes:
        now = int(time.time())
        return json_response({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": now, "owned_by": "vllm", "root": self.model,
            "parent": None, "max_model_len": 2048, "permission": []}]})

    async def generation(self, path: str, headers: dict[str, str], raw: bytes, w) -> bool:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            w.write(error_response(400, "Bad Request", f"JSON decode error: {e}", "Bad Request"))
            return True
        mode = headers.get("x-bad-mode") or body.pop("x_bad_mode", None) or self.mode
        handler = getattr(self, "mode_" + str(mode), None)
        if handler is None:
            w.write(error_response(400, "Bad Request", f"unknown bad-upstream mode {mode!r}", "BadRequestError"))
            return True
        self.requests_total += 1
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        return await handler(Ctx(path, headers, body, self.model), w)

    async def route(self, method: str, path: str, headers: dict[str, str], raw: bytes, w) -> bool:
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/health":
            w.write(response(200, "OK", content_type=None))
        elif method == "GET" and path == "/v1/models":
            if self.models_delay:
                await asyncio.sleep(self.models_delay)
            w.write(self.models())
        elif method == "GET" and path == "/metrics":
            w.write(self.metrics())
        elif method == "GET" and path == "/bad/stats":
            w.write(json_response({"requests_total": self.requests_total, "by_mode": self.by_mode, "by_path": self.by_path}))
        elif method == "POST" and path == "/tokenize":
            try:
                req = json.loads(raw)
                text = prompt_text("chat" if "messages" in req else "completion", req)
            except ValueError:
                text = ""
            n = max(1, len(text.split()))
            w.write(json_response({"count": n, "max_model_len": 2048, "tokens": list(range(1, n + 1)), "token_strs": None}))
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            return await self.generation(path, headers, raw, w)
        elif path in ("/v1/embeddings", "/v1/responses", "/version") or path.startswith("/v1/audio/"):
            self.by_path[path] = self.by_path.get(path, 0) + 1
            return await self.relayed(method, path, headers, raw, w)
        else:
            w.write(response(404, "Not Found", b'{"detail":"Not Found"}'))
        return True

    async def relayed(self, method: str, path: str, headers: dict[str, str], raw: bytes, w) -> bool:
        if path == "/version":
            w.write(json_response({"version": "0.32.0"}))
            return True
        if path.startswith("/v1/audio/"):
            w.write(json_response({"method": method, "path": path, "content_type": headers.get("content-type"),
                                   "body_len": len(raw), "body": raw.decode("latin-1"), "text": "echo"}))
            return True
        try:
            body = json.loads(raw)
        except ValueError:
            w.write(error_response(400, "Bad Request", "JSON decode error", "Bad Request"))
            return True
        now = int(time.time())
        if path == "/v1/embeddings":
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            data = [{"object": "embedding", "index": i,
                     "embedding": [round(b / 255.0, 4) for b in hashlib.sha256(dumps(x)).digest()[:4]]}
                    for i, x in enumerate(inputs)]
            w.write(json_response({"id": "embd-" + os.urandom(8).hex(), "object": "list", "created": now,
                                   "model": body.get("model") or self.model, "data": data,
                                   "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs), "completion_tokens": 0}}))
            return True
        resp = {"id": "resp_" + os.urandom(8).hex(), "object": "response", "created_at": now, "status": "completed",
                "model": body.get("model") or self.model,
                "output": [{"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": "echo: " + str(body.get("input")), "annotations": []}]}]}
        if body.get("stream") is not True:
            w.write(json_response(resp))
            return True
        w.write(sse_head(close=body.get("x_bad_mode") == "cut"))
        evs = [("response.created", {"type": "response.created", "response": dict(resp, status="in_progress")}),
               ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "echo: "}),
               ("response.output_text.delta", {"type": "response.output_text.delta", "delta": str(body.get("input"))}),
               ("response.completed", {"type": "response.completed", "response": resp})]
        for i, (name, obj) in enumerate(evs):
            if body.get("x_bad_mode") == "cut" and i == 2:
                await w.drain()
                return False
            w.write(chunk(b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"))
            await w.drain()
        w.write(b"0\r\n\r\n")
        return True

    async def serve(self, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.connections.add(task)
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    w.write(response(400, "Bad Request", b'{"detail":"bad request line"}', extra=[("connection", "close")]))
                    return
                method, path, _ = parts
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                raw = b""
                try:
                    if "chunked" in headers.get("transfer-encoding", "").lower():
                        while True:
                            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                            data = await reader.readexactly(size + 2)
                            if size == 0:
                                break
                            raw += data[:-2]
                    elif int(headers.get("content-length", "0")) > 0:
                        raw = await reader.readexactly(min(int(headers["content-length"]), MAX_BODY))
                except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                    return
                headers[":served"] = str(served)  # not a header name HTTP/1.1 can carry
                keep = await self.route(method, path, headers, raw, w)
                served += 1
                await w.drain()
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except ConnectionError:
            return
        except asyncio.CancelledError:
            # Shutdown. Ending normally instead of re-raising: Python 3.11's stream callback logs
            # a traceback for a connection task that ends cancelled.
            return
        finally:
            self.connections.discard(task)
            w.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="ok", help="answer of every generation request (see the module doc)")
    ap.add_argument("--port", type=int, default=0, help="0 = an ephemeral port (printed on the ready line)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--model", default="sim-model")
    ap.add_argument("--itl-ms", type=float, default=0.0, help="pause between SSE events")
    ap.add_argument("--models-delay-ms", type=float, default=0.0, help="pause before answering GET /v1/models")
    args = ap.parse_args()
    srv = Server(args.mode, args.model, args.itl_ms / 1000)
    srv.models_delay = args.models_delay_ms / 1000
    if not hasattr(srv, "mode_" + args.mode):
        modes = sorted(n[5:] for n in dir(srv) if n.startswith("mode_"))
        ap.error(f"unknown mode {args.mode!r}; one of: {', '.join(modes)}")
    server = await asyncio.start_server(srv.serve, args.host, args.port, limit=MAX_HEAD, reuse_address=True)
    host, port = server.sockets[0].getsockname()[:2]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    # Keep-alive connections would otherwise outlive the listener (and hold wait_closed() open).
    for t in list(srv.connections):
        t.cancel()
    await asyncio.gather(*srv.connections, return_exceptions=True)
    await server.wait_closed()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
