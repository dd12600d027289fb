"""Issue 10: a short run of bench/chaos.py (load with backends, Redis and a worker killed, a backend
stopped, clients leaving mid-stream): every answer complete and its own, or a clean error.
The long run and its figures: docs/robustness.md."""

from __future__ import annotations

import os
import subprocess
import sys

import harness

CHAOS = harness.ROOT / "bench" / "chaos.py"


def test_chaos_smoke_no_answer_lost_or_garbled(tmp_path):
    env = dict(os.environ, ENGINE_BIN=harness.ENGINE_BIN, SIM_BIN=harness.SIM_BIN)
    report = tmp_path / "chaos-report.json"
    r = subprocess.run(
        [sys.executable, str(CHAOS), "--seconds", "8", "--rate", "30", "--report", str(report)],
        cwd=str(harness.ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=60,
    )
    out = r.stdout
    last = [line for line in out.splitlines() if line.startswith("chaos: ")][-1:]
    assert r.returncode == 0, f"chaos.py exited {r.returncode}\n{out[-6000:]}"
    assert last and last[0].endswith(" faults, 0 garbled, 0 lost"), out[-6000:]
    # At least one fault of each kind was injected.
    for kind in ("backend_kill", "worker_kill", "redis_kill", "backend_stop"):
        assert f"] {kind}: " in out, f"no {kind} in the run\n{out[-6000:]}"
