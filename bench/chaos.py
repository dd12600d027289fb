#!/usr/bin/env python3
"""Chaos run for the Engine (issue 10): load with faults, every answer checked.

Starts two fake vLLM backends (Tests/integration/bad_upstream.py --mode ok: every answer's text is
"echo: <prompt>"), a real redis-server and an engine-server with one worker per core
(server.workers: 0) in front of them, all on 127.0.0.1. Then, for --seconds, sends --rate
requests/s from a pool of client threads (chat and completions, plain and streamed, repeated
prompts for cache hits and coalescing, some with Cache-Control: no-cache, some streaming clients
that leave after a few events) while a scheduler injects faults: kill -9 a backend and restart it
on the same port, kill -9 Redis and restart it, kill -9 one Engine worker (the supervisor restarts
it), SIGSTOP a backend for a couple of seconds.

Every answer is checked. A 200 plain answer must be the right JSON object whose text is exactly
"echo: <its own prompt>"; a 200 stream must be well-formed SSE whose deltas add up to exactly that
and end with [DONE], or end with exactly one error event and no [DONE] (a clean failure, whose
text so far must be a prefix of its own answer); any other status must be 4xx/5xx with an OpenAI
error body (429 with Retry-After). A connection that breaks under a client that did not choose to
leave is "dropped by a killed worker" when it broke within --worker-kill-window s of a worker kill,
and "lost" otherwise (also a request that hangs past --timeout). Anything else is "garbled".

Prints a summary table and, last, `chaos: N requests, F faults, G garbled, L lost`; exits 1 if
G or L is not 0 (2 on a setup failure, 130 on Ctrl-C). Every child process is stopped on exit.
A JSON report with the details of every anomaly is written next to the process logs.

    bench/chaos.py                        # 60 s at 100 requests/s
    bench/chaos.py --seconds 10 --rate 40 # the smoke (Tests/integration/test_chaos_smoke.py)

Binaries: --engine-bin, else $ENGINE_BIN, else .build/debug/engine-server.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "integration"))

import harness  # noqa: E402  (needs the sys.path entry above)
from harness import (  # noqa: E402
    RawStream,
    RedisServer,
    chat_body,
    completion_body,
    make_config,
    start_bad_upstream,
    start_engine,
)

FAULT_KINDS = ("backend_kill", "worker_kill", "redis_kill", "backend_stop")
REPEATED_POOL = 20
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def now() -> float:
    return time.monotonic()


# --------------------------------------------------------------------------------------------
# Requests and their outcomes
# --------------------------------------------------------------------------------------------


@dataclass
class Spec:
    """One client request: what is sent, and how the client behaves."""

    n: int
    kind: str  # "chat" or "completion"
    stream: bool
    prompt: str
    repeated: bool
    no_cache: bool
    leave_after: int | None  # streams only: close after this many events (0: right after sending)

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.kind == "chat" else "/v1/completions"

    @property
    def expected(self) -> str:
        return "echo: " + self.prompt

    def body(self) -> dict:
        make = chat_body if self.kind == "chat" else completion_body
        return make(self.prompt, max_tokens=64, stream=self.stream)

    def headers(self) -> dict[str, str]:
        h = {"X-Request-Id": f"chaos-{self.n}"}
        if self.no_cache:
            h["Cache-Control"] = "no-cache"
        return h

    def describe(self) -> dict:
        return {"n": self.n, "path": self.path, "stream": self.stream, "prompt": self.prompt,
                "headers": self.headers(), "leave_after": self.leave_after}


@dataclass
class Outcome:
    spec: Spec
    t_start: float
    t_end: float = 0.0
    kind: str = ""  # ok, clean_error, stream_error, client_left, conn_error, timeout, garbled
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    excerpt: str = ""
    events: int = 0
    final: str = ""  # filled in by classify(): the reported category

    def report(self, faults: "FaultLog", related: list["Outcome"] | None = None) -> dict:
        out = {
            "category": self.final, "reason": self.reason, "request": self.spec.describe(),
            "status": self.status, "response_headers": self.headers, "events_read": self.events,
            "body_excerpt": self.excerpt, "t_start": round(self.t_start - faults.t0, 3),
            "t_end": round(self.t_end - faults.t0, 3), "nearest_faults": faults.near(self.t_end),
        }
        if related:
            # Requests for the same answer that overlapped this one (a leader or co-follower of it).
            out["same_prompt_overlapping"] = [
                {"n": o.spec.n, "stream": o.spec.stream, "no_cache": o.spec.no_cache,
                 "leave_after": o.spec.leave_after, "t_start": round(o.t_start - faults.t0, 3),
                 "t_end": round(o.t_end - faults.t0, 3), "category": o.final, "status": o.status,
                 "x_cache": o.headers.get("x-cache"), "x_coalesced": o.headers.get("x-coalesced"),
                 "reason": o.reason}
                for o in related]
        return out


def excerpt(data: bytes | str, limit: int = 600) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2:]


def error_body_problem(obj: Any) -> str | None:
    """None if `obj` is an OpenAI error object {"error": {"message": str, "type": str, ...}}."""
    if not isinstance(obj, dict) or set(obj) != {"error"} or not isinstance(obj["error"], dict):
        return "not an OpenAI error object"
    err = obj["error"]
    if not isinstance(err.get("message"), str) or not isinstance(err.get("type"), str):
        return "error object without string message/type"
    return None


def check_plain(spec: Spec, out: Outcome, s: RawStream) -> None:
    body = s.read_body()
    out.excerpt = excerpt(body)
    if not s.complete:
        out.kind, out.reason = "conn_error", f"connection closed after {len(body)} body bytes (status {out.status})"
        return
    if s._buf:
        out.kind, out.reason = "garbled", f"bytes after the response body: {s._buf[:80]!r}"
        return
    ctype = out.headers.get("content-type", "")
    if out.status != 200:
        check_error_response(out, body)
        return
    if "application/json" not in ctype:
        out.kind, out.reason = "garbled", f"200 to a plain request with content-type {ctype!r}"
        return
    try:
        obj = json.loads(body)
    except ValueError as e:
        out.kind, out.reason = "garbled", f"200 body is not JSON: {e}"
        return
    want_object = "chat.completion" if spec.kind == "chat" else "text_completion"
    try:
        if obj["object"] != want_object:
            raise ValueError(f"object {obj['object']!r}, want {want_object!r}")
        choice = obj["choices"][0]
        text = choice["message"]["content"] if spec.kind == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        out.kind, out.reason = "garbled", f"200 body is not a {want_object}: {e!r}"
        return
    if text != spec.expected:
        out.kind, out.reason = "garbled", f"wrong text: {text!r}"
        return
    out.kind = "ok"


def check_error_response(out: Outcome, body: bytes) -> None:
    status = out.status or 0
    if not 400 <= status <= 599:
        out.kind, out.reason = "garbled", f"status {status}"
        return
    try:
        obj = json.loads(body)
    except ValueError as e:
        out.kind, out.reason = "garbled", f"{status} body is not JSON: {e}"
        return
    problem = error_body_problem(obj)
    if problem:
        out.kind, out.reason = "garbled", f"{status}: {problem}"
        return
    if status == 429 and "retry-after" not in out.headers:
        out.kind, out.reason = "garbled", "429 without Retry-After"
        return
    out.kind = "clean_error"
    out.reason = f"{status} {obj['error'].get('code')}"
    if status == 503 and "retry-after" not in out.headers:  # documented (docs/api.md), not required here
        out.reason += " (without Retry-After)"


def check_stream(spec: Spec, out: Outcome, s: RawStream) -> None:
    """Reads and checks an SSE body event by event (the head is read already, status 200)."""
    ctype = out.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        body = s.read_body()
        out.excerpt = excerpt(body)
        out.kind, out.reason = "garbled", f"200 to a streaming request with content-type {ctype!r}"
        return
    want_object = "chat.completion.chunk" if spec.kind == "chat" else "text_completion"
    text = ""
    done = False
    error_event: dict | None = None
    seen: list[str] = []
    while True:
        if spec.leave_after is not None and out.events >= spec.leave_after and not done and error_event is None:
            s.close()
            out.kind, out.reason = "client_left", f"left after {out.events} events"
            out.excerpt = excerpt("\n\n".join(seen))
            return
        ev = s.read_event()
        if ev is None:
            break
        seen.append(ev)
        out.excerpt = excerpt("\n\n".join(seen[-4:]))
        if ev.startswith(":"):  # an SSE comment (": queued")
            continue
        out.events += 1
        if done or error_event is not None:
            out.kind, out.reason = "garbled", f"event after {'[DONE]' if done else 'the error event'}: {ev[:120]!r}"
            return
        if not ev.startswith("data: ") or "\n" in ev or "\r" in ev:
            out.kind, out.reason = "garbled", f"malformed SSE event: {ev[:200]!r}"
            return
        payload = ev[len("data: "):]
        if payload == "[DONE]":
            done = True
            continue
        try:
            obj = json.loads(payload)
        except ValueError as e:
            out.kind, out.reason = "garbled", f"event is not JSON ({e}): {payload[:200]!r}"
            return
        if isinstance(obj, dict) and "error" in obj:
            problem = error_body_problem(obj)
            if problem:
                out.kind, out.reason = "garbled", f"error event: {problem}: {payload[:200]!r}"
                return
            error_event = obj
            continue
        try:
            if obj["object"] != want_object:
                raise ValueError(f"object {obj['object']!r}, want {want_object!r}")
            choices = obj["choices"]
            if not choices:  # the usage chunk
                continue
            piece = choices[0]["delta"].get("content") if spec.kind == "chat" else choices[0]["text"]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            out.kind, out.reason = "garbled", f"event is not a {want_object}: {e!r}: {payload[:200]!r}"
            return
        text += piece or ""
        if not spec.expected.startswith(text):
            out.kind, out.reason = "garbled", f"text is not a prefix of its own answer: {text!r}"
            return
    leftover = s._body + (s._buf if s.complete else b"")
    if s.complete and leftover.strip():
        out.kind, out.reason = "garbled", f"bytes after the last event: {leftover[:120]!r}"
        return
    if done:
        if text != spec.expected:
            out.kind, out.reason = "garbled", f"ends with [DONE] but the text is {text!r}"
            return
        out.kind = "ok"
        if not s.complete:
            out.reason = "[DONE] received, then the connection closed without the last chunk"
        return
    if error_event is not None:
        out.kind = "stream_error"
        out.reason = f"error event {error_event['error'].get('code')}: {error_event['error'].get('message')}"
        if not s.complete:
            out.reason += " (connection closed without the last chunk)"
        return
    if s.complete:
        out.kind, out.reason = "garbled", f"stream ended (framing complete) without [DONE] or an error event; text {text!r}"
        return
    out.kind = "conn_error"
    out.reason = f"connection closed mid-stream after {out.events} events" + (f" and {len(leftover)} bytes" if leftover else "")


def run_request(spec: Spec, port: int, timeout: float) -> Outcome:
    out = Outcome(spec, now())
    s: RawStream | None = None
    try:
        s = RawStream(port, "POST", spec.path, spec.body(), spec.headers(), timeout=timeout)
        if spec.stream and spec.leave_after == 0:
            out.kind, out.reason = "client_left", "left right after sending"
            return out
        out.status, out.headers = s.read_head()
        if spec.stream and out.status == 200:
            check_stream(spec, out, s)
        else:
            check_plain(spec, out, s)
    except (socket.timeout, TimeoutError) as e:
        out.kind, out.reason = "timeout", f"no data for {timeout:.0f} s ({e})"
    except OSError as e:  # refused, reset, broken pipe, closed before the head (ConnectionError)
        out.kind, out.reason = "conn_error", f"{type(e).__name__}: {e}"
    except ValueError as e:  # chunked framing that does not parse, a bad status line
        out.kind, out.reason = "garbled", f"HTTP framing: {e}"
    finally:
        out.t_end = now()
        if s is not None:
            if not out.excerpt and s.raw:
                out.excerpt = excerpt(s.raw[-600:])
            s.close()
    return out


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


class FaultLog:
    def __init__(self) -> None:
        self.t0 = now()
        self.events: list[tuple[float, str, str]] = []  # (time, kind, detail)
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []
        self.lock = threading.Lock()

    def record(self, kind: str, detail: str, count: bool = True) -> None:
        with self.lock:
            self.events.append((now(), kind, detail))
            if count:
                self.counts[kind] += 1
        print(f"  [{now() - self.t0:6.2f}s] {kind}: {detail}", flush=True)

    def worker_kills(self) -> list[float]:
        return [t for t, k, _ in self.events if k == "worker_kill"]

    def near(self, t: float, within: float = 3.0) -> list[str]:
        """The fault log entries within `within` s of `t`, nearest first."""
        near = sorted((abs(t - tt), tt, k, d) for tt, k, d in self.events if abs(t - tt) <= within)
        return [f"{k} {d} at {tt - self.t0:.2f}s ({t - tt:+.3f}s before this answer ended)" for _, tt, k, d in near]


def engine_workers(supervisor: int) -> list[int]:
    """Pids of the live children of `supervisor` named engine-server (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1: stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        if comm == "engine-server" and int(fields[1]) == supervisor and fields[0] != "Z":
            out.append(int(d))
    return sorted(out)


class Chaos:
    """The processes, and the fault actions on them. Only the main thread calls these (processes
    started by harness die with the thread that started them: PR_SET_PDEATHSIG)."""

    def __init__(self, args: argparse.Namespace, log: FaultLog):
        self.args = args
        self.log = log
        self.rng = random.Random(args.seed + 1)
        self.backends: list = []
        self.down: set[int] = set()  # indexes of backends killed or stopped
        self.redis: RedisServer | None = None
        self.engine = None
        self.expected_workers = 0
        self.pending: list[tuple[float, int, str, Callable[[], None]]] = []  # restores
        self._seq = 0

    # -- setup --------------------------------------------------------------------------------
    def start(self) -> None:
        itl = ("--itl-ms", self.args.itl_ms)
        self.backends = [start_bad_upstream("ok", *itl) for _ in range(2)]
        self.redis = RedisServer().start()
        cfg = make_config(
            self.backends,
            server={"host": "127.0.0.1", "workers": self.args.workers, "drain_timeout_seconds": 2},
            redis={"url": self.redis.url},
            admission_control={"enabled": False},
            circuit_breaker={"failure_threshold": 3, "cooldown_seconds": 1},
            cache={"enabled": True},
            vllm={"retry_count": 1, "retry_backoff_seconds": 0.05, "health_check_interval_seconds": 1,
                  "timeout_seconds": 10},
        )
        self.engine = start_engine(cfg)
        workers = self.args.workers or os.sysconf("SC_NPROCESSORS_ONLN") or 1
        self.expected_workers = workers if workers > 1 else 0
        if self.expected_workers:
            deadline = now() + 20
            while len(engine_workers(self.engine.pid)) < self.expected_workers or \
                    self.engine.log_text().count("engine listening on") < self.expected_workers:
                if now() > deadline:
                    raise RuntimeError(f"the Engine did not start {self.expected_workers} workers:\n{self.engine.log_tail()}")
                time.sleep(0.05)
        # Every worker must have seen both backends healthy (/health is per process).
        harness.wait_until(lambda: all(self.engine.get("/health", timeout=2).status_code == 200 for _ in range(6)),
                           timeout=15, what="the Engine's /health to answer 200")

    def stop(self) -> None:
        self.pending.clear()  # nothing to bring back: everything stops (stop() sends SIGCONT first)
        for p in [self.engine, *self.backends]:
            if p is not None:
                try:
                    p.stop(timeout=3)
                except Exception:  # noqa: BLE001
                    pass
        if self.redis is not None:
            self.redis.stop()
        harness.reap_all()

    # -- scheduling ---------------------------------------------------------------------------
    def later(self, delay: float, what: str, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (now() + delay, self._seq, what, fn))

    def run_due(self) -> None:
        while self.pending and self.pending[0][0] <= now():
            _, _, _, fn = heapq.heappop(self.pending)
            fn()

    def restore_all(self) -> None:
        while self.pending:
            _, _, _, fn = heapq.heappop(self.pending)
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                print(f"chaos: restore failed: {e}", file=sys.stderr)

    # -- faults -------------------------------------------------------------------------------
    def inject(self, kind: str) -> bool:
        return getattr(self, kind)()

    def _healthy_backend(self) -> int | None:
        up = [i for i in range(len(self.backends)) if i not in self.down]
        return self.rng.choice(up) if up else None

    def backend_kill(self) -> bool:
        i = self._healthy_backend()
        if i is None:
            return False
        b = self.backends[i]
        self.down.add(i)
        self.log.record("backend_kill", f"backend {i} (port {b.port}) kill -9")
        b.kill()
        b.stop()
        delay = self.rng.uniform(1.0, 3.0)

        def restart() -> None:
            for attempt in range(1, 11):
                try:
                    self.backends[i] = start_bad_upstream("ok", "--itl-ms", self.args.itl_ms, port=b.port)
                    break
                except Exception as e:  # noqa: BLE001 - the port may still be held for a moment
                    if attempt == 10:
                        raise
                    first = (str(e).splitlines() or [""])[0]
                    self.log.record("note", f"backend {i} restart attempt {attempt} failed: {first}", count=False)
                    time.sleep(0.3)
            self.down.discard(i)
            self.log.record("backend_restart", f"backend {i} back on port {b.port}", count=False)

        self.later(delay, "backend restart", restart)
        return True

    def backend_stop(self) -> bool:
        i = self._healthy_backend()
        if i is None:
            return False
        b = self.backends[i]
        self.down.add(i)
        delay = self.rng.uniform(1.5, 2.5)
        self.log.record("backend_stop", f"backend {i} (port {b.port}) SIGSTOP for {delay:.1f}s")
        b.pause()

        def resume() -> None:
            b.resume()
            self.down.discard(i)
            self.log.record("backend_cont", f"backend {i} SIGCONT", count=False)

        self.later(delay, "backend resume", resume)
        return True

    def redis_kill(self) -> bool:
        assert self.redis is not None
        if not self.redis.alive:
            return False
        self.log.record("redis_kill", f"redis (port {self.redis.port}) kill -9")
        self.redis.kill()
        delay = self.rng.uniform(0.5, 2.0)

        def restart() -> None:
            assert self.redis is not None
            self.redis.start()
            self.log.record("redis_restart", f"redis back on port {self.redis.port}", count=False)

        self.later(delay, "redis restart", restart)
        return True

    def worker_kill(self) -> bool:
        if not self.expected_workers:
            return False
        pids = engine_workers(self.engine.pid)
        if not pids:
            return False
        pid = self.rng.choice(pids)
        self.log.record("worker_kill", f"engine worker pid {pid} kill -9 (workers {pids})")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

        def check() -> None:
            live = engine_workers(self.engine.pid)
            ok = len(live) >= self.expected_workers and pid not in live
            self.log.record("worker_check", f"workers now {live}" + ("" if ok else " (NOT restarted yet)"), count=False)
            if not ok:
                self.log.notes.append(f"worker {pid} not replaced 3 s after its kill")

        self.later(3.0, "worker check", check)
        return True


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


class Load:
    def __init__(self, args: argparse.Namespace, port: int):
        self.args = args
        self.port = port
        self.rng = random.Random(args.seed)
        self.repeated = [
            f"repeat {j}: " + " ".join(random.Random(1000 + j).choice(WORDS) for _ in range(10))
            for j in range(REPEATED_POOL)
        ]
        self.jobs: queue.Queue[Spec | None] = queue.Queue()
        self.results: list[Outcome] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.sent = 0
        self.skipped = 0  # not sent: every client thread busy
        self.threads = [threading.Thread(target=self._worker, daemon=True, name=f"client-{i}")
                        for i in range(args.clients)]
        for t in self.threads:
            t.start()

    def make_spec(self, n: int) -> Spec:
        r = self.rng
        repeated = r.random() < self.args.repeat_fraction
        if repeated:
            prompt = r.choice(self.repeated)
        else:
            prompt = f"unique {n} s{self.args.seed}: " + " ".join(r.choice(WORDS) for _ in range(r.randint(6, 14)))
        stream = r.random() < 0.5
        leave = None
        if stream and r.random() < self.args.leave_fraction:
            leave = r.randint(0, 4)
        return Spec(n=n, kind="chat" if r.random() < 0.6 else "completion", stream=stream, prompt=prompt,
                    repeated=repeated, no_cache=r.random() < self.args.no_cache_fraction, leave_after=leave)

    def _worker(self) -> None:
        while True:
            spec = self.jobs.get()
            if spec is None:
                return
            out = run_request(spec, self.port, self.args.timeout)
            with self.lock:
                self.results.append(out)
                self.in_flight -= 1

    def submit(self, n: int) -> None:
        with self.lock:
            if self.in_flight >= self.args.clients:
                self.skipped += 1
                return
            self.in_flight += 1
            self.sent += 1
        self.jobs.put(self.make_spec(n))

    def run(self, stop: threading.Event) -> None:
        """Submits at --rate for --seconds (called in its own thread)."""
        t0 = now()
        n = 0
        while not stop.is_set():
            due = t0 + n / self.args.rate
            if due - t0 >= self.args.seconds:
                return
            wait = due - now()
            if wait > 0:
                stop.wait(wait)
                if stop.is_set():
                    return
            self.submit(n)
            n += 1

    def drain(self, deadline: float) -> int:
        """Waits until every request sent has an outcome, or the deadline; returns how many did not."""
        while now() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return 0
            time.sleep(0.05)
        with self.lock:
            return self.in_flight


# --------------------------------------------------------------------------------------------
# Verdict
# --------------------------------------------------------------------------------------------

CATEGORIES = ("ok", "clean error (HTTP status)", "clean error (stream error event)", "client left",
              "dropped by a killed worker", "lost", "garbled")


def classify(results: list[Outcome], faults: FaultLog, window: float) -> None:
    kills = faults.worker_kills()
    for o in results:
        if o.kind == "ok":
            o.final = "ok"
        elif o.kind == "clean_error":
            o.final = "clean error (HTTP status)"
        elif o.kind == "stream_error":
            o.final = "clean error (stream error event)"
        elif o.kind == "client_left":
            o.final = "client left"
        elif o.kind == "conn_error":
            near_kill = any(-0.1 <= o.t_end - k <= window for k in kills)
            o.final = "dropped by a killed worker" if near_kill else "lost"
        elif o.kind == "timeout":
            o.final = "lost"
        else:
            o.final = "garbled"


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summarize(args, load: Load, faults: FaultLog, unfinished: int, elapsed: float, report_path: Path) -> tuple[int, int, int, int]:
    results = load.results
    classify(results, faults, args.worker_kill_window)
    cats = Counter(o.final for o in results)
    n = load.sent
    n_faults = sum(faults.counts.values())
    garbled = cats["garbled"]
    lost = cats["lost"] + unfinished

    print()
    print(f"chaos summary ({elapsed:.1f} s of load at {args.rate:g}/s, {args.clients} client threads, seed {args.seed})")
    print(f"  {'requests sent':<36}{n:>7}")
    if load.skipped:
        print(f"  {'not sent (every client thread busy)':<36}{load.skipped:>7}")
    kinds = Counter((o.spec.kind, o.spec.stream) for o in results)
    print(f"  {'  chat plain / chat stream':<36}{kinds[('chat', False)]:>7} / {kinds[('chat', True)]}")
    print(f"  {'  completions plain / stream':<36}{kinds[('completion', False)]:>7} / {kinds[('completion', True)]}")
    print(f"  {'  repeated prompts':<36}{sum(o.spec.repeated for o in results):>7}")
    print(f"  {'  with Cache-Control: no-cache':<36}{sum(o.spec.no_cache for o in results):>7}")
    print(f"  {'  streams meant to leave early':<36}{sum(o.spec.leave_after is not None for o in results):>7}")
    print(f"  {'faults injected':<36}{n_faults:>7}")
    for k in FAULT_KINDS:
        print(f"  {'  ' + k:<36}{faults.counts[k]:>7}")
    print("  outcomes")
    for c in CATEGORIES:
        print(f"  {'  ' + c:<36}{cats[c]:>7}")
    if unfinished:
        print(f"  {'  unfinished at the end (lost)':<36}{unfinished:>7}")
    statuses = Counter(o.reason for o in results if o.final.startswith("clean error"))
    if statuses:
        print("  clean errors by kind")
        for r, c in statuses.most_common(12):
            print(f"    {c:>6}  {r[:100]}")
    ok = [o for o in results if o.final == "ok"]
    xcache = Counter(o.headers.get("x-cache", "-") for o in ok)
    coalesced = sum(o.headers.get("x-coalesced") == "true" for o in ok)
    print("  answers ok by x-cache: " + ", ".join(f"{k} {v}" for k, v in sorted(xcache.items()))
          + f"; x-coalesced: true {coalesced}")
    lat = [o.t_end - o.t_start for o in ok]
    print(f"  ok latency: p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms, "
          f"max {max(lat, default=0) * 1000:.0f} ms; over 5 s: {sum(x > 5 for x in lat)}")
    odd = Counter(o.reason for o in ok if o.reason)
    for r, c in odd.items():
        print(f"  note: {c} ok stream(s): {r}")
    for note in faults.notes:
        print(f"  note: {note}")

    bad = [o for o in results if o.final in ("garbled", "lost")]
    by_answer: dict[tuple[str, str], list[Outcome]] = {}
    for o in results:
        by_answer.setdefault((o.spec.kind, o.spec.prompt), []).append(o)

    def related(o: Outcome) -> list[Outcome]:
        """Other requests of the same kind and prompt that were in flight within 1 s of this one."""
        return sorted((x for x in by_answer[(o.spec.kind, o.spec.prompt)]
                       if x is not o and x.t_start <= o.t_end and x.t_end >= o.t_start - 1.0),
                      key=lambda x: x.t_start)
    for o in bad[: args.show]:
        print(f"\n  {o.final.upper()}: {o.reason}")
        print("    " + json.dumps(o.report(faults, related(o)), indent=None)[:2000])
    if len(bad) > args.show:
        print(f"\n  ... {len(bad) - args.show} more in the report")
    report = {
        "args": vars(args), "requests": n, "not_sent": load.skipped, "faults": dict(faults.counts),
        "outcomes": dict(cats), "unfinished": unfinished,
        "fault_log": [(round(t - faults.t0, 3), k, d) for t, k, d in faults.events],
        "anomalies": [o.report(faults, related(o)) for o in bad],
        "dropped_by_worker_kill": [o.report(faults) for o in results if o.final == "dropped by a killed worker"][:500],
        "clean_errors": [o.report(faults, related(o)) for o in results if o.final.startswith("clean error")][:500],
        "slow_ok": [o.report(faults, related(o)) for o in ok if o.t_end - o.t_start > 5][:100],
    }
    report_path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n  report: {report_path}")
    print(f"  process logs: {harness.run_dir()}")
    return n, n_faults, garbled, lost


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 epilog=doc.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="length of the load (default 60)")
    ap.add_argument("--rate", type=float, default=100, help="requests per second (default 100)")
    ap.add_argument("--clients", type=int, default=256, help="client threads = most requests in flight (default 256)")
    ap.add_argument("--fault-interval", type=float, default=0.0,
                    help="seconds between faults; 0 = min(2.5, (seconds - 2) / 4) (at least one of each kind)")
    ap.add_argument("--itl-ms", type=float, default=20, help="backends' pause between SSE events (default 20)")
    ap.add_argument("--workers", type=int, default=0, help="server.workers (default 0: one per core)")
    ap.add_argument("--timeout", type=float, default=20,
                    help="a request with no data for this long is lost (default 20; a remote follower of a "
                         "killed worker may wait 10 s for the Redis lock to expire)")
    ap.add_argument("--worker-kill-window", type=float, default=1.0,
                    help="a broken connection this soon after a worker kill is 'dropped by a killed worker' (default 1)")
    ap.add_argument("--repeat-fraction", type=float, default=0.3, help="requests drawn from 20 repeated prompts (default 0.3)")
    ap.add_argument("--no-cache-fraction", type=float, default=0.1, help="requests with Cache-Control: no-cache (default 0.1)")
    ap.add_argument("--leave-fraction", type=float, default=0.15,
                    help="streams whose client closes after 0-4 events (default 0.15)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the load and the fault choices")
    ap.add_argument("--show", type=int, default=20, help="garbled/lost answers printed in full (default 20)")
    ap.add_argument("--engine-bin", default=os.environ.get("ENGINE_BIN") or str(ROOT / ".build" / "debug" / "engine-server"))
    ap.add_argument("--report", type=Path, default=None, help="JSON report path (default: in the log directory)")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.clients <= 0:
        ap.error("--seconds, --rate and --clients must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.ENGINE_BIN = args.engine_bin

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    faults = FaultLog()
    chaos = Chaos(args, faults)
    stop = threading.Event()
    try:
        print(f"chaos: starting 2 backends, redis and the Engine ({args.engine_bin}); logs in {harness.run_dir()}", flush=True)
        try:
            chaos.start()
        except Exception as e:  # noqa: BLE001
            print(f"chaos: setup failed: {e}", file=sys.stderr)
            return 2
        workers = engine_workers(chaos.engine.pid)
        print(f"chaos: Engine on port {chaos.engine.port}, workers {workers or '(one process)'}, "
              f"backends {[b.port for b in chaos.backends]}, redis {chaos.redis.port}", flush=True)

        load = Load(args, chaos.engine.port)
        faults.t0 = now()
        loader = threading.Thread(target=load.run, args=(stop,), daemon=True, name="loader")
        loader.start()
        interval = args.fault_interval or max(0.5, min(2.5, (args.seconds - 2) / 4))
        rng = random.Random(args.seed + 2)
        order: list[str] = []
        first_cycle = True
        next_fault = now() + min(1.0, interval)
        quiet_tail = min(2.0, args.seconds * 0.15)  # no new fault in the last moments of the load
        while loader.is_alive():
            chaos.run_due()
            if now() >= next_fault and now() - faults.t0 < args.seconds - quiet_tail:
                if not order:
                    order = list(FAULT_KINDS)
                    if not first_cycle:
                        rng.shuffle(order)
                    first_cycle = False
                kind = order.pop(0)
                if not chaos.inject(kind):
                    faults.record("note", f"{kind} skipped (nothing to act on)", count=False)
                next_fault = now() + interval
            time.sleep(0.02)
        elapsed = now() - faults.t0
        # Bring everything back, then let the requests in flight finish.
        chaos.restore_all()
        unfinished = load.drain(now() + args.timeout + 2)
        if unfinished:
            print(f"chaos: {unfinished} requests still unanswered after {args.timeout + 2:.0f} s", flush=True)
        report_path = args.report or harness.run_dir() / "chaos-report.json"
        n, n_faults, garbled, lost = summarize(args, load, faults, unfinished, elapsed, report_path)
        print(f"chaos: {n} requests, {n_faults} faults, {garbled} garbled, {lost} lost", flush=True)
        return 1 if garbled or lost else 0
    except KeyboardInterrupt:
        print("\nchaos: interrupted; stopping every process", file=sys.stderr, flush=True)
        return 130
    finally:
        stop.set()
        chaos.stop()


if __name__ == "__main__":
    sys.exit(main())
