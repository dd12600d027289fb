#!/usr/bin/env bash
# bench/shared_store.sh: what sharing one cache costs (issue 9). The default config (workers: 0,
# no redis.url) runs one worker per core sharing a private redis-server; before, each worker had
# its own in-process cache. Same upstream (vllm-sim, zero latency), wrk -t2 -c$CONNS, cache hits
# (one repeated body) and misses (unique prompts, every lookup misses, every answer stored):
#   memory-1      workers 1, embedded in-process store (what --workers 1 still runs)
#   redis-1       workers 1, a redis-server on loopback TCP (redis.url)
#   default-2     workers 0 (= 2 here), the supervisor's private redis-server on a Unix socket
# CPU µs/request counts every process of the setup (supervisor, workers, its redis-server).
# Usage: [ROUNDS=3] bench/shared_store.sh [DURATION] [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5s}
CONNS=${2:-64}
bash scripts/setup.sh --bench >/dev/null
swift build -c release --static-swift-stdlib --product engine-server >/dev/null
swift build -c release --static-swift-stdlib --product vllm-sim >/dev/null
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d /tmp/engine-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; echo "no answer on $1" >&2; return 1; }

SIM_PORT=$(port); REDIS_PORT=$(port)
"$BIN/vllm-sim" --port "$SIM_PORT" >"$WORK/sim.log" 2>&1 & pids+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 & pids+=($!)
REDIS_PID=${pids[-1]}
wait_http "$SIM_PORT" /health

declare -A PORTS PIDS
start() { # name workers redis-url
    local p; p=$(port)
    cat >"$WORK/$1.yaml" <<YAML
server: {host: 127.0.0.1, log_level: warning, access_log: false, workers: $2}
vllm: {instances: [{url: "http://127.0.0.1:$SIM_PORT"}]}
redis: {url: "$3"}
model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: sim-model}
YAML
    "$BIN/engine-server" --config "$WORK/$1.yaml" --port "$p" >"$WORK/$1.log" 2>&1 & pids+=($!)
    PIDS[$1]=${pids[-1]}
    PORTS[$1]=$p
    wait_http "$p" /health
    sleep 0.5
}
start memory-1 1 ""
start redis-1 1 "redis://127.0.0.1:$REDIS_PORT/0"
start default-2 0 ""

# CPU ticks of a process and all its descendants (plus extra pids).
cpu_tree() {
    python3 - "$@" <<'PY'
import os, sys
roots = {int(x) for x in sys.argv[1:]}
kids = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            kids.setdefault(int(f[1]), []).append(int(p))
        except OSError:
            pass
seen, stack, total = set(), list(roots), 0
while stack:
    p = stack.pop()
    if p in seen:
        continue
    seen.add(p)
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    except OSError:
        pass
    stack += kids.get(p, [])
print(total)
PY
}

run() { # name script -> "name case rps cpu_us"
    local name=$1 script=$2 extra=""
    [ "$name" = redis-1 ] && extra=$REDIS_PID
    wrk -t2 -c"$CONNS" -d2s -s "$script" "http://127.0.0.1:${PORTS[$name]}/v1/chat/completions" >/dev/null 2>&1
    local c0; c0=$(cpu_tree "${PIDS[$name]}" $extra)
    wrk -t2 -c"$CONNS" -d"$DUR" -s "$script" "http://127.0.0.1:${PORTS[$name]}/v1/chat/completions" >"$WORK/wrk.txt" 2>&1
    local c1; c1=$(cpu_tree "${PIDS[$name]}" $extra)
    python3 - "$name" "$script" "$WORK/wrk.txt" "$((c1 - c0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
t = open(sys.argv[3]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
total = int(re.search(r"(\d+) requests in", t).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(sys.argv[1], "miss" if "unique" in sys.argv[2] else "hit", rps, round(int(sys.argv[4]) / int(sys.argv[5]) * 1e6 / max(total, 1), 1), bad.group(1) if bad else 0)
PY
}

ROUNDS=${ROUNDS:-3}
out=""
for _ in $(seq "$ROUNDS"); do
    for n in memory-1 redis-1 default-2; do
        out+="$(run $n bench/post.lua);$(run $n bench/unique.lua);"
    done
done
python3 - "$out" "$CONNS" "$DUR" <<'PY'
import statistics, sys
rows = {}
for r in sys.argv[1].split(";"):
    if r.strip():
        n, case, rps, cpu, bad = r.split()
        rows.setdefault((n, case), []).append((float(rps), float(cpu), int(bad)))
print(f"## Shared cache cost: wrk -t2 -c{sys.argv[2]} -d{sys.argv[3]}, zero-latency vllm-sim, median of rounds\n")
print("| setup | hits req/s | hits CPU µs/req | misses req/s | misses CPU µs/req | non-2xx |\n|---|---|---|---|---|---|")
for n in ("memory-1", "redis-1", "default-2"):
    h, m = rows[(n, "hit")], rows[(n, "miss")]
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    print(f"| {n} | {med(h,0):.0f} | {med(h,1):.1f} | {med(m,0):.0f} | {med(m,1):.1f} | {sum(x[2] for x in h + m)} |")
PY
