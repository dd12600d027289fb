#!/usr/bin/env bash
# bench/run.sh: one run, same upstream (vllm-sim, zero latency), three targets: the upstream
# directly, nginx as a plain keep-alive reverse proxy, and one Engine process. wrk (Debian) is
# the load. Prints req/s, p50, p99 side by side with ratios, a streaming TTFT/gap probe, and the
# Engine's RSS with 1,000 idle keep-alive connections. Usage: bench/run.sh [DURATION] [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONNS=${2:-64}
bash scripts/setup.sh --bench >/dev/null
swift build -c release --product engine-server >/dev/null
swift build -c release --product vllm-sim >/dev/null
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d /tmp/engine-bench.XXXXXX)
mkdir -p "$WORK/body" "$WORK/proxy" bench/results
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; echo "no answer on $1" >&2; return 1; }

SIM_PORT=$(port); NGINX_PORT=$(port); ENGINE_PORT=$(port)
"$BIN/vllm-sim" --port "$SIM_PORT" ${SIM_ARGS:-} >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_http "$SIM_PORT" /health
sed -e "s#__DIR__#$WORK#g" -e "s#__UPSTREAM_PORT__#$SIM_PORT#g" -e "s#__PORT__#$NGINX_PORT#g" \
    bench/nginx.conf.template >"$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 & pids+=($!)
wait_http "$NGINX_PORT" /health
cat >"$WORK/engine.yaml" <<YAML
server: {host: 127.0.0.1, log_level: warning}
vllm: {instances: [{url: "http://127.0.0.1:$SIM_PORT"}]}
redis: {url: "${BENCH_REDIS_URL:-}"}
cache: {enabled: ${BENCH_CACHE:-false}}
model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: sim-model}
YAML
"$BIN/engine-server" --config "$WORK/engine.yaml" --port "$ENGINE_PORT" >"$WORK/engine.log" 2>&1 & ENGINE_PID=$!; pids+=($ENGINE_PID)
wait_http "$ENGINE_PORT" /health

run_wrk() { # name port -> "name rps p50ms p99ms"
    wrk -t2 -c"$CONNS" -d3s -s bench/post.lua "http://127.0.0.1:$2/v1/chat/completions" >/dev/null 2>&1 # warm-up
    wrk -t2 -c"$CONNS" -d"$DUR" --latency -s bench/post.lua "http://127.0.0.1:$2/v1/chat/completions" >"$WORK/wrk-$1.txt" 2>&1
    python3 - "$1" "$WORK/wrk-$1.txt" <<'PY'
import re, sys
t = open(sys.argv[2]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups(); n = float(n)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", t).group(1)); p99 = ms(re.search(r"99%\s+(\S+)", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(sys.argv[1], rps, p50, p99, errs.group(1) if errs else 0)
PY
}
direct=$(run_wrk direct "$SIM_PORT"); ngx=$(run_wrk nginx "$NGINX_PORT"); eng=$(run_wrk engine "$ENGINE_PORT")
stream_direct=$(python3 bench/stream_probe.py 127.0.0.1 "$SIM_PORT" 32 64)
stream_engine=$(python3 bench/stream_probe.py 127.0.0.1 "$ENGINE_PORT" 32 64)
idle=$(python3 bench/idle_conns.py 127.0.0.1 "$ENGINE_PORT" 1000 "$ENGINE_PID")

python3 - "$direct" "$ngx" "$eng" "$stream_direct" "$stream_engine" "$idle" "$CONNS" "$DUR" <<'PY' | tee bench/results/latest.md
import json, sys
rows = [a.split() for a in sys.argv[1:4]]
d, n, e = ({"rps": float(r[1]), "p50": float(r[2]), "p99": float(r[3]), "non2xx": int(r[4])} for r in rows)
print(f"## Non-streaming chat, wrk -t2 -c{sys.argv[7]} -d{sys.argv[8]}, same vllm-sim upstream\n")
print("| target | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|")
for name, x in (("direct (vllm-sim)", d), ("nginx proxy", n), ("Engine (1 process)", e)):
    print(f"| {name} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {x['non2xx']} |")
print(f"\nEngine/nginx throughput: **{e['rps']/n['rps']:.2f}x**; Engine/direct: {e['rps']/d['rps']:.2f}x")
print(f"Added p50 vs direct: Engine {e['p50']-d['p50']:+.3f} ms, nginx {n['p50']-d['p50']:+.3f} ms")
print(f"Added p99 vs direct: Engine {e['p99']-d['p99']:+.3f} ms, nginx {n['p99']-d['p99']:+.3f} ms")
sd, se = json.loads(sys.argv[4]), json.loads(sys.argv[5])
print("\n## Streaming, 32 concurrent chat streams x 64 tokens\n")
print("| target | TTFT p50 ms | TTFT p99 ms | chunk gap p50 ms | chunk gap p99 ms |\n|---|---|---|---|---|")
for name, x in (("direct", sd), ("Engine", se)):
    print(f"| {name} | {x['ttft_p50_ms']:.2f} | {x['ttft_p99_ms']:.2f} | {x['gap_p50_ms']:.3f} | {x['gap_p99_ms']:.3f} |")
n_idle, rss = sys.argv[6].split()
print(f"\n## Memory\n\nEngine RSS with {n_idle} idle keep-alive connections: **{int(rss)/1e6:.1f} MB**")
PY
