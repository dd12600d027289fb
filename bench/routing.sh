#!/usr/bin/env bash
# Prefix-aware routing benchmark (issue 13): 4 vllm-sim replicas with a prefix cache and a serial
# prefill cost, the Engine in front (default workers), round_robin vs prefix_aware at the same
# open-loop rates; policy "exact" is prefix_aware with routing.kv_events (each sim publishes its KV
# events, every worker subscribes). Prints one JSON line per (policy, rate) from routing_driver.py.
#   bench/routing.sh                      # release build, rates "8 16 24", 30 s each
#   RATES="24" SECONDS_PER_RUN=20 bench/routing.sh
# Knobs (env): RATES, SECONDS_PER_RUN, TENANTS (40), SYSTEM_CHARS (6000), HOT (0.25),
# PREFILL_US (100 µs per uncached token), KV_BLOCKS (1536 × 16 tokens per replica), WORKERS (0),
# POLICIES ("round_robin prefix_aware exact"), WARMUP (seconds sent first and not counted: 0),
# SHOW_METRICS (non-empty: print each worker's routing counters after a run, on stderr).
# A replica's cache holds ~24k tokens; 40 tenants × ~1.5k tokens = 60k: round-robin makes every
# replica cycle through all tenants (LRU misses), prefix-aware gives each ~a quarter of them.
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${CONF:-release}
BIN=${BIN:-$(swift build -c "$CONF" --show-bin-path)}
[[ -x $BIN/engine-server && -x $BIN/vllm-sim ]] || swift build -c "$CONF" --static-swift-stdlib --product engine-server --product vllm-sim
PY=${PY:-.venv/bin/python}
RATES=${RATES:-"8 16 24"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
TENANTS=${TENANTS:-40}
SYSTEM_CHARS=${SYSTEM_CHARS:-6000}
HOT=${HOT:-0.25}
PREFILL_US=${PREFILL_US:-100}
KV_BLOCKS=${KV_BLOCKS:-1536}
WORKERS=${WORKERS:-0}
POLICIES=${POLICIES:-"round_robin prefix_aware exact"}
WARMUP=${WARMUP:-0}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

port_of() { # wait for "listening on host:port" in $1
    for _ in $(seq 100); do
        if grep -qo 'listening on [^ ]*:[0-9]*' "$1" 2>/dev/null; then grep -o 'listening on [^ ]*' "$1" | head -1 | sed 's/.*://'; return; fi
        sleep 0.1
    done
    echo "no listening line in $1" >&2; cat "$1" >&2; exit 1
}

for policy in $POLICIES; do
  for rate in $RATES; do
    SIMS=()
    KVPORTS=()
    for i in 0 1 2 3; do
        KV=()
        if [[ $policy == exact ]]; then
            KVPORTS+=("$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
            KV=(--kv-events-config "{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\",\"endpoint\":\"tcp://*:${KVPORTS[$i]}\"}")
        fi
        "$BIN/vllm-sim" --port 0 --max-model-len 16384 --kv-blocks "$KV_BLOCKS" --block-size 16 --max-num-seqs 256 \
            --itl-ms 5 --prefill-us-per-token "$PREFILL_US" --seed $((i + 1)) "${KV[@]}" >"$TMP/sim$i.log" 2>&1 &
        PIDS+=($!)
        SIMS+=("http://127.0.0.1:$(port_of "$TMP/sim$i.log")")
    done
    EPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    {
        echo "server: {host: 127.0.0.1, port: $EPORT, workers: $WORKERS, access_log: off, log_level: warning}"
        echo "vllm:"
        echo "  instances:"
        for i in "${!SIMS[@]}"; do
            echo "    - url: ${SIMS[$i]}"
            if [[ $policy == exact ]]; then echo "      kv_events_url: tcp://127.0.0.1:${KVPORTS[$i]}"; fi
        done
        echo "  timeout_seconds: 120"
        echo "cache: {enabled: false}"
        echo "admission_control: {poll_interval_seconds: 1, soft_limit: 0.95, hard_limit: 0.99}"
        echo "model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: null}"
        if [[ $policy == exact ]]; then echo "routing: {policy: prefix_aware, kv_events: true}"; else echo "routing: {policy: $policy}"; fi
    } >"$TMP/engine.yaml"
    "$BIN/engine-server" --config "$TMP/engine.yaml" >"$TMP/engine.log" 2>&1 &
    EPID=$!
    PIDS+=("$EPID")
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EPORT/health" >/dev/null && break; sleep 0.1; done
    sleep 1.5  # a metrics poll has sized the index
    SIM_CSV=$(IFS=,; echo "${SIMS[*]}")
    "$PY" bench/routing_driver.py --engine "http://127.0.0.1:$EPORT" --sims "$SIM_CSV" --engine-pid "$EPID" \
        --rate "$rate" --seconds "$SECONDS_PER_RUN" --tenants "$TENANTS" --system-chars "$SYSTEM_CHARS" --hot "$HOT" \
        --warmup-seconds "$WARMUP" --label "$policy"
    if [[ -n ${SHOW_METRICS:-} ]]; then  # each worker's routing counters (a read reaches one worker)
        for _ in $(seq 12); do
            curl -s "http://127.0.0.1:$EPORT/metrics" | grep -E '^engine_(routing_(tokenize|block_map)_total|routing_decisions_total|kv_events_batches_total)' | tr '\n' ' '
            echo
        done | sort -u | sed "s/^/# $policy worker: /" >&2
    fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
  done
done
