#!/usr/bin/env bash
# bench/run.sh: one run, same upstream (vllm-sim, zero latency), three targets: the upstream
# directly, nginx as a plain keep-alive reverse proxy, and one Engine process. wrk (Debian) is
# the load. Prints req/s, p50, p99 side by side with ratios, a streaming TTFT/gap probe, and the
# Engine's RSS with 1,000 idle keep-alive connections. Usage: [ROUNDS=3] bench/run.sh [DURATION] [CONNS]
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

SIM_PORT=$(port); NGINX_PORT=$(port); ENGINE_PORT=$(port); CACHE_PORT=$(port); MISS_PORT=$(port); RMISS_PORT=$(port)
SIM2_PORT=$(port); REDIS_PORT=$(port); SENGINE_PORT=$(port)
"$BIN/vllm-sim" --port "$SIM_PORT" ${SIM_ARGS:-} >"$WORK/sim.log" 2>&1 & pids+=($!)
"$BIN/vllm-sim" --port "$SIM2_PORT" --ttft-ms 10 --itl-ms 5 >"$WORK/sim2.log" 2>&1 & pids+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 & pids+=($!)
wait_http "$SIM_PORT" /health
sed -e "s#__DIR__#$WORK#g" -e "s#__UPSTREAM_PORT__#$SIM_PORT#g" -e "s#__PORT__#$NGINX_PORT#g" \
    bench/nginx.conf.template >"$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 & pids+=($!)
wait_http "$NGINX_PORT" /health
engine_conf() { # name upstream-port cache redis-url
    cat >"$WORK/$1.yaml" <<YAML
server: {host: 127.0.0.1, log_level: warning, access_log: false, workers: 1}
vllm: {instances: [{url: "http://127.0.0.1:$2"}]}
redis: {url: "$4"}
cache: {enabled: $3}
model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: sim-model}
YAML
}
start_engine() { # name port upstream-port cache redis-url
    engine_conf "$1" "$3" "$4" "$5"
    "$BIN/engine-server" --config "$WORK/$1.yaml" --port "$2" >"$WORK/$1.log" 2>&1 & pids+=($!)
    wait_http "$2" /health
}
start_engine engine "$ENGINE_PORT" "$SIM_PORT" false ""; ENGINE_PID=${pids[-1]}
start_engine cache "$CACHE_PORT" "$SIM_PORT" true ""
start_engine miss "$MISS_PORT" "$SIM_PORT" true ""
start_engine rmiss "$RMISS_PORT" "$SIM_PORT" true "redis://127.0.0.1:$REDIS_PORT/0"
start_engine stream "$SENGINE_PORT" "$SIM2_PORT" false ""

# CPU seconds (utime+stime) of every process listening on a port (nginx: master + worker).
cpu_of_port() {
    local total=0
    for pid in $(ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        total=$((total + $(awk '{print $14+$15}' /proc/$pid/stat)))
    done
    echo "$total"
}
run_wrk() { # name port conns script -> "name rps p50ms p99ms non2xx cpu_us_per_request"
    local script=${4:-bench/post.lua}
    wrk -t2 -c"$3" -d2s -s "$script" "http://127.0.0.1:$2/v1/chat/completions" >/dev/null 2>&1 # warm-up
    local threads=2; [ "$3" -lt 2 ] && threads=1
    local c0; c0=$(cpu_of_port "$2")
    wrk -t$threads -c"$3" -d"$DUR" --latency -s "$script" "http://127.0.0.1:$2/v1/chat/completions" >"$WORK/wrk-$1.txt" 2>&1
    local c1; c1=$(cpu_of_port "$2")
    python3 - "$1" "$WORK/wrk-$1.txt" "$((c1 - c0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
t = open(sys.argv[2]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups(); n = float(n)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
total = int(re.search(r"(\d+) requests in", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
cpu_us = int(sys.argv[3]) / int(sys.argv[4]) * 1e6 / max(total, 1)
print(sys.argv[1], rps, p50, p99, errs.group(1) if errs else 0, round(cpu_us, 1))
PY
}
# Throughput: ROUNDS interleaved rounds (direct, nginx, Engine), so drift on a shared machine
# hits all three alike; the report takes the median of each.
ROUNDS=${ROUNDS:-3}
direct=""; ngx=""; eng=""
for _ in $(seq "$ROUNDS"); do
    direct+="$(run_wrk direct "$SIM_PORT" "$CONNS");"
    ngx+="$(run_wrk nginx "$NGINX_PORT" "$CONNS");"
    eng+="$(run_wrk engine "$ENGINE_PORT" "$CONNS");"
done
# One connection, also interleaved rounds: p99 at low load is mostly scheduling noise here.
direct1=""; ngx1=""; eng1=""
for _ in $(seq "$ROUNDS"); do
    direct1+="$(run_wrk direct1 "$SIM_PORT" 1);"
    ngx1+="$(run_wrk nginx1 "$NGINX_PORT" 1);"
    eng1+="$(run_wrk engine1 "$ENGINE_PORT" 1);"
done
hit=$(run_wrk hit "$CACHE_PORT" "$CONNS")
miss=""; rmiss=""
for _ in $(seq "$ROUNDS"); do
    miss+="$(run_wrk miss "$MISS_PORT" 1 bench/unique.lua);"
    rmiss+="$(run_wrk rmiss "$RMISS_PORT" 1 bench/unique.lua);"
done
stream_direct=$(python3 bench/stream_probe.py 127.0.0.1 "$SIM2_PORT" 16 64)
stream_engine=$(python3 bench/stream_probe.py 127.0.0.1 "$SENGINE_PORT" 16 64)
idle=$(python3 bench/idle_conns.py 127.0.0.1 "$ENGINE_PORT" 1000 "$ENGINE_PID")

python3 - "$direct" "$ngx" "$eng" "$direct1" "$ngx1" "$eng1" "$hit" "$miss" "$rmiss" "$stream_direct" "$stream_engine" "$idle" "$CONNS" "$DUR" <<'PY' | tee bench/results/latest.md
import json, sys
import statistics
def one(a):
    r = a.split(); return {"rps": float(r[1]), "p50": float(r[2]), "p99": float(r[3]), "non2xx": int(r[4]), "cpu": float(r[5])}
def row(a):
    rounds = [one(x) for x in a.split(";") if x.strip()]
    m = {k: statistics.median(r[k] for r in rounds) for k in ("rps", "p50", "p99", "cpu")}
    m["non2xx"] = sum(r["non2xx"] for r in rounds); m["rounds"] = rounds
    return m
d, n, e, d1, n1, e1, hit, miss, rmiss = (row(a) for a in sys.argv[1:10])
sd, se = json.loads(sys.argv[10]), json.loads(sys.argv[11])
conns, dur = sys.argv[13], sys.argv[14]
rounds = len(e["rounds"])
print(f"## Throughput: non-streaming chat, wrk -t2 -c{conns} -d{dur}, same vllm-sim upstream, median of {rounds} interleaved rounds\n")
print("| target | req/s | p50 ms | p99 ms | non-2xx | CPU µs/request (target process) |\n|---|---|---|---|---|---|")
for name, x in (("direct (vllm-sim)", d), ("nginx proxy", n), ("Engine (1 process)", e), ("Engine cache hits", hit)):
    print(f"| {name} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {x['non2xx']} | {x['cpu']:.1f} |")
per_round = ", ".join(f"{a['rps']/b['rps']:.2f}x" for a, b in zip(e["rounds"], n["rounds"]))
print(f"\nEngine/nginx throughput: **{e['rps']/n['rps']:.2f}x** (target >= 0.8x; per round: {per_round}); Engine/direct: {e['rps']/d['rps']:.2f}x")
print(f"CPU per proxied request: Engine {e['cpu']:.1f} µs, nginx {n['cpu']:.1f} µs (nginx/Engine {n['cpu']/e['cpu']:.2f}x)")
print(f"Cache-hit throughput / nginx passthrough: **{hit['rps']/n['rps']:.2f}x** (target >= 1.5x)")
print(f"\n## Added latency at low load: one connection (wrk -t1 -c1 -d{dur}, median of {len(e1['rounds'])} interleaved rounds)\n")
print("| target | req/s | p50 ms | p99 ms |\n|---|---|---|---|")
for name, x in (("direct", d1), ("nginx", n1), ("Engine", e1)):
    print(f"| {name} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} |")
added99 = ", ".join(f"{a['p99']-b['p99']:+.2f}" for a, b in zip(e1["rounds"], d1["rounds"]))
print(f"\nAdded by the Engine vs direct: p50 **{e1['p50']-d1['p50']:+.3f} ms**, p99 **{e1['p99']-d1['p99']:+.3f} ms** (target p99 <= 1 ms; per round {added99} ms); nginx: p50 {n1['p50']-d1['p50']:+.3f} ms, p99 {n1['p99']-d1['p99']:+.3f} ms")
print(f"\n## Cache miss cost, Redis on vs off (unique prompts, one connection, median of {len(miss['rounds'])} interleaved rounds)\n")
print("| Engine | p50 ms | p99 ms |\n|---|---|---|")
print(f"| in-process cache | {miss['p50']:.3f} | {miss['p99']:.3f} |\n| Redis cache | {rmiss['p50']:.3f} | {rmiss['p99']:.3f} |")
added50 = ", ".join(f"{a['p50']-b['p50']:+.3f}" for a, b in zip(rmiss["rounds"], miss["rounds"]))
print(f"\nAdded by Redis on a miss at p50: **{rmiss['p50']-miss['p50']:+.3f} ms** (target <= 0.2 ms; per round {added50} ms)")
print("\n## Streaming: 16 concurrent chat streams x 64 tokens, upstream TTFT 10 ms, 5 ms per token\n")
print("| target | TTFT p50 ms | TTFT p99 ms | chunk gap p50 ms | chunk gap p99 ms |\n|---|---|---|---|---|")
for name, x in (("direct", sd), ("Engine", se)):
    print(f"| {name} | {x['ttft_p50_ms']:.2f} | {x['ttft_p99_ms']:.2f} | {x['gap_p50_ms']:.3f} | {x['gap_p99_ms']:.3f} |")
print(f"\nAdded TTFT p50: {se['ttft_p50_ms']-sd['ttft_p50_ms']:+.2f} ms; added per-chunk gap p50: {se['gap_p50_ms']-sd['gap_p50_ms']:+.3f} ms")
n_idle, rss = sys.argv[12].split()
print(f"\n## Memory\n\nEngine RSS with {n_idle} idle keep-alive connections: **{int(rss)/1e6:.1f} MB** (target <= 30 MB)")
PY
