"""Issue 10: a client that stops reading holds a bounded amount of the Engine's memory, whatever
the stream's length. The Engine stops reading the backend once the client's output passes the
pause point (256 KiB of buffer over a 64 KiB kernel send buffer), so nothing accumulates in its
records either. One process (workers: 1): the test measures that process's resident memory."""

from __future__ import annotations

import json
import socket
import time

from harness import make_config

STREAMS = 10
# Documented bound per stalled stream (docs/architecture.md, backpressure) plus the process's own
# growth for the first connections (allocator arenas, buffers). Measured: ~0.17 MB per stream and
# ~4 MB fixed; before the fix a stalled stream held 4-5 MB.
PER_STREAM = 512 * 1024
FIXED = 8 * 1024 * 1024


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
        # The simulator generates as fast as it can; wait until what the Engine lets through has
        # arrived (two readings a second apart within 256 KiB), at most 15 s.
        samples = [rss(pid) - base]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(1)
            samples.append(rss(pid) - base)
            if len(samples) >= 3 and abs(samples[-1] - samples[-2]) < 256 * 1024:
                break
        mb = [round(x / 1e6, 1) for x in samples]
        assert abs(samples[-1] - samples[-2]) < 256 * 1024, f"still growing after 15 s: {mb} MB"
        assert samples[-1] < STREAMS * PER_STREAM + FIXED, f"RSS grew {mb} MB for {STREAMS} stalled streams"
    finally:
        for s in socks:
            s.close()
