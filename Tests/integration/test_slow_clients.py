"""Issue 10: a client that stops reading holds a bounded amount of the Engine's memory, whatever
the stream's length. The Engine stops reading the backend once the client's output passes the
pause point (256 KiB of buffer over a 64 KiB kernel send buffer), so nothing accumulates in its
records either. One process (workers: 1): the test measures that process's resident memory."""

from __future__ import annotations

import json
import socket
import time

from harness import make_config, wait_until

STREAMS = 30
# Documented bound per stalled stream (docs/operations.md, "Slow clients") plus the process's
# own growth for the first connections (allocator arenas, buffers).
PER_STREAM = 512 * 1024
FIXED = 10 * 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_stalled_streams_hold_bounded_memory(sim_factory, engine_factory):
    sim = sim_factory("--max-model-len", 200000)
    eng = engine_factory(make_config([sim], server={"workers": 1}, admission_control={"enabled": False}))
    pid = eng.proc.pid
    time.sleep(0.3)
    base = rss(pid)
    socks = []
    try:
        for i in range(STREAMS):
            body = json.dumps({"model": "sim-model", "stream": True, "max_tokens": 150000,
                               "messages": [{"role": "user", "content": f"never read {i} {time.time()}"}]}).encode()
            s = socket.create_connection(("127.0.0.1", eng.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            socks.append(s)
        wait_until(lambda: sim.stats()["running"] >= STREAMS, timeout=10, what="every stream generating")
        samples = []
        for _ in range(6):  # the backend keeps generating; our memory must not follow it
            time.sleep(0.5)
            samples.append(rss(pid) - base)
        grown = max(samples)
        assert grown < STREAMS * PER_STREAM + FIXED, f"RSS grew {grown / 1e6:.1f} MB for {STREAMS} stalled streams: {samples}"
        assert samples[-1] - samples[2] < 2 * 1024 * 1024, f"still growing: {samples}"
    finally:
        for s in socks:
            s.close()
