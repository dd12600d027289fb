#!/usr/bin/env bash
# bench/haproxy.sh: N Engines (one process each, own port) behind haproxy, against vllm-sim, with
# wrk as the load: the explicit-load-balancer deployment measured next to --workers N.
# Usage: bench/haproxy.sh [N=2] [DURATION=10s] [CONNS=64]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}; DUR=${2:-10s}; CONNS=${3:-64}
bash scripts/setup.sh --bench >/dev/null
swift build -c release --static-swift-stdlib --product engine-server >/dev/null
swift build -c release --static-swift-stdlib --product vllm-sim >/dev/null
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d /tmp/engine-haproxy.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; return 1; }
SIM=$(port); HA=$(port)
"$BIN/vllm-sim" --port "$SIM" >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_http "$SIM" /health
cat >"$WORK/engine.yaml" <<YAML
server: {host: 127.0.0.1, log_level: warning, access_log: false, workers: 1}
vllm: {instances: [{url: "http://127.0.0.1:$SIM"}]}
cache: {enabled: false}
model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: sim-model}
YAML
servers=""
for i in $(seq 1 "$N"); do
    p=$(port)
    "$BIN/engine-server" --config "$WORK/engine.yaml" --port "$p" >"$WORK/engine$i.log" 2>&1 & pids+=($!)
    wait_http "$p" /health
    servers+="    server e$i 127.0.0.1:$p check"$'\n'
done
sed -e "s#__PORT__#$HA#" -e "/__SERVERS__/d" bench/haproxy.cfg.template >"$WORK/haproxy.cfg"
printf '%s' "$servers" >>"$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & pids+=($!)
wait_http "$HA" /health
echo "== $N Engines behind haproxy (wrk -t2 -c$CONNS -d$DUR)"
wrk -t2 -c"$CONNS" -d"$DUR" --latency -s bench/post.lua "http://127.0.0.1:$HA/v1/chat/completions" | grep -E "Requests/sec|^ +(50|99)%"
