#!/usr/bin/env python3
# kv_events_capture.py PUB_URL OUT_DIR SECONDS: subscribes to a vLLM (or vllm-sim) KV-event publisher,
# saves each multipart message as OUT_DIR/msgNNN.bin (Tests/fixtures/kv-events/README.md has the framing)
# and prints it decoded. Needs pyzmq and msgpack (a private venv is enough).
import sys, time, json, os, zmq, msgpack
pub = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5557"
out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/kvcap/raw"
secs = float(sys.argv[3]) if len(sys.argv) > 3 else 60
os.makedirs(out, exist_ok=True)
ctx = zmq.Context()
s = ctx.socket(zmq.SUB); s.connect(pub); s.setsockopt(zmq.SUBSCRIBE, b"")
p = zmq.Poller(); p.register(s, zmq.POLLIN)
n = 0; end = time.time() + secs
while time.time() < end:
    if not p.poll(200): continue
    frames = s.recv_multipart()
    with open(f"{out}/msg{n:03d}.bin", "wb") as f:
        # our fixture framing: u32 frame count, then per frame u32 length (big-endian) + bytes
        f.write(len(frames).to_bytes(4, "big"))
        for fr in frames: f.write(len(fr).to_bytes(4, "big")); f.write(fr)
    seq = int.from_bytes(frames[1], "big") if len(frames) > 1 else None
    body = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
    def short(e):
        if isinstance(e, dict) and "token_ids" in e:
            e = dict(e); e["token_ids"] = f"[{len(e['token_ids'])} ids: {e['token_ids'][:8]}...]"
        return e
    print(json.dumps({"n": n, "frames": [len(f) for f in frames], "topic": frames[0].decode(), "seq": seq,
                      "ts": body[0], "events": [short(e) if isinstance(e, dict) else e for e in body[1]],
                      "rest": body[2:]}, default=repr), flush=True)
    n += 1
