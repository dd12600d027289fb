"""Streaming probe for bench/run.sh: N concurrent SSE chat streams against HOST:PORT; reports the
time to first token (TTFT, first content chunk) and the gap between chunks, p50/p99 and mean.
Every stream's prompt is unique (pid, clock, index), so an Engine with the cache on misses and
relays every stream through all its stages. Usage: stream_probe.py HOST PORT [STREAMS] [TOKENS]"""
import json
import os
import socket
import statistics
import sys
import threading
import time

host, port = sys.argv[1], int(sys.argv[2])
n_streams = int(sys.argv[3]) if len(sys.argv) > 3 else 32
tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
run_tag = f"{os.getpid()}-{time.time_ns()}"


def request(i):
    body = json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": f"stream please {run_tag}-{i}"}],
                       "max_tokens": tokens, "stream": True}).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


ttft, gaps = [], []
lock = threading.Lock()


def one(i):
    req = request(i)
    s = socket.create_connection((host, port))
    t0 = time.perf_counter()
    s.sendall(req)
    buf = b""
    last = None
    first = None
    my_gaps = []
    while True:
        d = s.recv(65536)
        if not d:
            break
        now = time.perf_counter()
        buf += d
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if b'"delta":{"content"' in ev:
                if first is None:
                    first = now - t0
                elif last is not None:
                    my_gaps.append(now - last)
                last = now
            if b"[DONE]" in ev:
                s.close()
                with lock:
                    ttft.append(first)
                    gaps.extend(my_gaps)
                return
    s.close()


threads = [threading.Thread(target=one, args=(i,)) for i in range(n_streams)]
for t in threads:
    t.start()
for t in threads:
    t.join()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")


print(json.dumps({"streams": len(ttft), "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
                  "gap_p50_ms": pct(gaps, 50), "gap_p99_ms": pct(gaps, 99),
                  "gap_mean_ms": statistics.mean(gaps) * 1000 if gaps else float("nan")}))
