#!/usr/bin/env bash
# bench/run.sh: one run that measures every case of issue 11, each proxy against the same cheap,
# fixed upstream, in interleaved rounds (medians), with CPU per request counted over every
# process of each proxy. Usage: [ROUNDS=3] [WARM=1s] bench/run.sh [DURATION=10s] [CONNS=64]
#
# Upstream: one nginx (bench/upstream.conf.template, bodies from bench/upstream.py) answering any
# POST with one fixed vLLM chat.completion on one port, and with one whole 50-event vLLM chat
# stream on another; plus vllm-sim with real pacing (10 ms to first token, 5 ms per token) for
# the streaming probe. Proxies, one process (or thread) per core, access log off:
#   nginx      worker_processes = nproc, keep-alive pools, proxy_buffering off (nginx.conf.template)
#   haproxy    nbthread = nproc, http-no-delay, http-reuse always (haproxy-proxy.cfg.template)
#   Engine     workers: 0 (one per core; with the cache on, answers and flight claims in the
#              workers' shared-memory segment, the private redis-server only for coalesced answers),
#              and, as extra rows, workers: 1 (one process, in-process store) for the cache-on cases
# Cases (wrk -t1 -c$CONNS, a ~420 B chat request, bench/post.lua or bench/unique.lua; STREAM=1
# makes either ask for "stream":true):
#   plain     fixed request, passthrough: nginx, haproxy, Engine cache off
#   unique    every prompt unique: nginx, haproxy, Engine cache on (every lookup misses, every
#             answer is stored: all stages)
#   hits      fixed request, Engine cache on (all hits), against nginx passthrough
#   stream    the same three kinds with "stream":true against the 50-event upstream
#   one conn  wrk -t1 -c1, unique prompts: direct upstream, nginx, Engine cache off and on
#   probe     bench/stream_probe.py (16 streams x 64 tokens, unique prompts) against vllm-sim
#             directly, through nginx, through the Engine: time to first token, gap between chunks
#   idle      RSS (and PSS) with 1,000 idle keep-alive connections, all processes summed, measured
#             first, while every target is fresh
# With `perf` able to count (PERF=1, the default then; PERF=0 turns it off), every wrk run also
# counts the target's instructions retired, user and kernel, per request: a table of its own.
# Prints the tables and the issue-11 targets (met or not) and writes them to bench/results/latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONNS=${2:-64}
ROUNDS=${ROUNDS:-3}
WARM=${WARM:-1s}  # one warm-up run per target and script before the first round
NPROC=$(nproc)
START=$SECONDS
# PERF=1 (the default when `perf` can count here) adds instructions per request to every wrk run.
if [ -z "${PERF:-}" ]; then
    PERF=0
    if command -v perf >/dev/null && perf stat -e instructions:u -x, -o /dev/null true 2>/dev/null; then PERF=1; fi
fi

bash scripts/setup.sh --bench >/dev/null
swift build -c release --static-swift-stdlib --product engine-server >/dev/null
swift build -c release --static-swift-stdlib --product vllm-sim >/dev/null
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d /tmp/engine-bench.XXXXXX)
chmod 755 "$WORK"  # nginx's workers (www-data when started as root) read the upstream's bodies here
mkdir -p "$WORK/body" "$WORK/proxy" "$WORK/upstream-body" bench/results
RESULTS=$WORK/results.txt  # one line per measured run, read by the report at the end
: >"$RESULTS"

# Every process started here is killed on exit by its pid (nginx's master and the Engine's
# supervisor take their workers, and the supervisor its redis-server, with them).
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0; sleep 0.1; done; echo "no answer on $1" >&2; return 1; }

# A target is a port to load and the pid of its root process: CPU and memory are summed over
# that process and all its descendants (bench/proctree.py).
declare -A PORT ROOT
target() { PORT[$1]=$2; ROOT[$1]=$3; }

# --- Upstreams ------------------------------------------------------------------------------------
UP_JSON=$(port); UP_SSE=$(port); SIM=$(port)
python3 bench/upstream.py "$WORK" bench/upstream.conf.template "$UP_JSON" "$UP_SSE" >"$WORK/upstream.txt"
nginx -c "$WORK/upstream.conf" -p "$WORK" >"$WORK/upstream.log" 2>&1 & pids+=($!)
target direct "$UP_JSON" "${pids[-1]}"
"$BIN/vllm-sim" --port "$SIM" --ttft-ms 10 --itl-ms 5 >"$WORK/sim.log" 2>&1 & pids+=($!)
target sim "$SIM" "${pids[-1]}"
wait_http "$UP_JSON" /health
wait_http "$UP_SSE" /health
wait_http "$SIM" /health

# --- Baseline proxies -----------------------------------------------------------------------------
NG_PLAIN=$(port); NG_SSE=$(port); NG_SIM=$(port)
sed -e "s#__DIR__#$WORK#g" -e "s#__WORKERS__#$NPROC#" \
    -e "s#__PLAIN_UP__#$UP_JSON#" -e "s#__SSE_UP__#$UP_SSE#" -e "s#__SIM_UP__#$SIM#" \
    -e "s#__PLAIN_PORT__#$NG_PLAIN#" -e "s#__SSE_PORT__#$NG_SSE#" -e "s#__SIM_PORT__#$NG_SIM#" \
    bench/nginx.conf.template >"$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 & pids+=($!)
target nginx "$NG_PLAIN" "${pids[-1]}"
target nginx-sse "$NG_SSE" "${pids[-1]}"
target nginx-sim "$NG_SIM" "${pids[-1]}"
HA_PLAIN=$(port); HA_SSE=$(port)
sed -e "s#__THREADS__#$NPROC#" -e "s#__PLAIN_UP__#$UP_JSON#" -e "s#__SSE_UP__#$UP_SSE#" \
    -e "s#__PLAIN_PORT__#$HA_PLAIN#" -e "s#__SSE_PORT__#$HA_SSE#" \
    bench/haproxy-proxy.cfg.template >"$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & pids+=($!)
target haproxy "$HA_PLAIN" "${pids[-1]}"
target haproxy-sse "$HA_SSE" "${pids[-1]}"
for p in "$NG_PLAIN" "$NG_SSE" "$NG_SIM" "$HA_PLAIN" "$HA_SSE"; do wait_http "$p" /health; done

# --- Engines ----------------------------------------------------------------------------------------
# start_engine NAME WORKERS CACHE UPSTREAM-PORT. No redis.url: with the cache on and workers 0 the
# supervisor starts its private redis-server, as a user's default config does. XDG_RUNTIME_DIR puts
# that redis-server's directory under $WORK/NAME (it is found by process tree all the same).
start_engine() {
    local p; p=$(port)
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1.yaml" <<YAML
server: {host: 127.0.0.1, log_level: warning, access_log: false, workers: $2}
vllm: {instances: [{url: "http://127.0.0.1:$4"}]}
cache: {enabled: $3}
model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: sim-model}
YAML
    XDG_RUNTIME_DIR=$WORK/$1 "$BIN/engine-server" --config "$WORK/$1.yaml" --port "$p" >"$WORK/$1.log" 2>&1 & pids+=($!)
    target "$1" "$p" "${pids[-1]}"
    wait_http "$p" /health
}
start_engine eng-off 0 false "$UP_JSON"
start_engine eng-on 0 true "$UP_JSON"
start_engine eng1-on 1 true "$UP_JSON"
start_engine seng-off 0 false "$UP_SSE"
start_engine seng-on 0 true "$UP_SSE"
start_engine seng1-on 1 true "$UP_SSE"
start_engine peng-off 0 false "$SIM"
start_engine peng-on 0 true "$SIM"
sleep 1  # every worker listening, every private redis-server up

# The Engine must take the fixed answers as real ones (it checks a 200 body: a chat.completion for
# a plain request, SSE ending in [DONE] for a stream) and cache them: MISS, then HIT. Stop otherwise.
check_engine() { # NAME STREAM(true|false) WHAT-THE-BODY-MUST-HOLD
    local body="{\"model\":\"sim-model\",\"messages\":[{\"role\":\"user\",\"content\":\"check $$ $1\"}],\"max_tokens\":16,\"temperature\":0,\"stream\":$2}"
    local want
    for want in MISS HIT; do
        curl -s -D "$WORK/check.head" -o "$WORK/check.body" -H 'Content-Type: application/json' -d "$body" \
            "http://127.0.0.1:${PORT[$1]}/v1/chat/completions"
        if ! head -1 "$WORK/check.head" | grep -q " 200" || ! grep -qi "^x-cache: $want" "$WORK/check.head" \
            || ! grep -q "$3" "$WORK/check.body"; then
            echo "bench: $1 does not answer the fixed upstream as expected ($want, $3):" >&2
            cat "$WORK/check.head" "$WORK/check.body" >&2
            exit 1
        fi
    done
}
check_engine eng-on false '"object":"chat.completion"'
check_engine seng-on true 'data: \[DONE\]'

# What each target's CPU and memory figures count, for the report.
for t in direct nginx haproxy eng-off eng-on eng1-on; do
    echo "$t $(python3 bench/proctree.py list "${ROOT[$t]}" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=","}')"
done >"$WORK/processes.txt"

# --- Memory with 1,000 idle keep-alive connections (first, while every target is fresh) -----------
for t in nginx haproxy eng-on eng-off; do
    echo "$t $(python3 bench/idle_conns.py 127.0.0.1 "${PORT[$t]}" 1000 "${ROOT[$t]}")"
done >"$WORK/idle.txt"

# --- Load runs ------------------------------------------------------------------------------------------
# run_wrk KEY TARGET CONNS SCRIPT STREAM ROUND: one wrk run; appends to $RESULTS
#   "KEY ROUND req/s p50-ms p99-ms non-2xx socket-errors CPU-µs-per-request requests"
# CPU per request = CPU ticks of the target's whole process tree during the run / requests wrk
# completed. wrk itself, the upstream and the idle targets are not counted.
run_wrk() {
    local key=$1 t=$2 c=$3 script=$4 stream=$5 round=$6
    local url="http://127.0.0.1:${PORT[$t]}/v1/chat/completions"
    if [ "$round" = 1 ]; then
        STREAM=$stream wrk -t1 -c"$c" -d"$WARM" -s "$script" "$url" >/dev/null 2>&1
    fi
    local c0 c1 stat=""
    c0=$(python3 bench/proctree.py cpu "${ROOT[$t]}")
    : >"$WORK/perf.txt"
    if [ "$PERF" = 1 ]; then
        # Instructions retired by the target's processes during the run (steadier than CPU time on
        # a shared machine): perf stat until interrupted, then its totals in CSV.
        perf stat -x, -e instructions:u,instructions:k -o "$WORK/perf.txt" \
            -p "$(python3 bench/proctree.py list "${ROOT[$t]}" | awk '{print $1}' | paste -sd,)" & stat=$!
    fi
    STREAM=$stream wrk -t1 -c"$c" -d"$DUR" --latency -s "$script" "$url" >"$WORK/wrk.txt" 2>&1
    if [ -n "$stat" ]; then kill -INT "$stat"; wait "$stat" || true; fi
    c1=$(python3 bench/proctree.py cpu "${ROOT[$t]}")
    cp "$WORK/wrk.txt" "$WORK/wrk-$key-$round.txt"
    python3 - "$key" "$round" "$WORK/wrk.txt" "$((c1 - c0))" "$(getconf CLK_TCK)" "$WORK/perf.txt" >>"$RESULTS" <<'PY'
import re, sys
key, rnd, path, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ins = {}
for line in open(sys.argv[6]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        ins[f[2]] = int(f[0])
t = open(path).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups(); n = float(n)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
total = int(re.search(r"(\d+) requests in", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
cpu_us = ticks / hz * 1e6 / max(total, 1)
per = lambda e: round(ins[e] / max(total, 1)) if e in ins else -1
print(key, rnd, rps, p50, p99, bad.group(1) if bad else 0, sum(map(int, sock.groups())) if sock else 0, round(cpu_us, 2), total,
      per("instructions:u"), per("instructions:k"))
PY
}
# probe KEY TARGET ROUND: the streaming probe, as "KEY ROUND {json}". With PERF=1 the JSON also
# holds the target's instructions per stream, user and kernel: vllm-sim writes each event on its
# own, so this is a stream read one event at a time, as from a real vLLM (the wrk cases read the
# fixed upstream's whole stream at once). perf attaches before the first stream starts.
probe() {
    local stat="" out
    : >"$WORK/perf.txt"
    if [ "$PERF" = 1 ]; then
        perf stat -x, -e instructions:u,instructions:k -o "$WORK/perf.txt" \
            -p "$(python3 bench/proctree.py list "${ROOT[$2]}" | awk '{print $1}' | paste -sd,)" & stat=$!
        sleep 0.3
    fi
    out=$(python3 bench/stream_probe.py 127.0.0.1 "${PORT[$2]}" 16 64)
    if [ -n "$stat" ]; then kill -INT "$stat"; wait "$stat" || true; fi
    echo "$1 $3 $(python3 - "$out" "$WORK/perf.txt" <<'PY'
import json, sys
x = json.loads(sys.argv[1])
for line in open(sys.argv[2]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit() and x["streams"]:
        x["ins_u" if f[2] == "instructions:u" else "ins_k"] = int(f[0]) / x["streams"]
print(json.dumps(x))
PY
)" >>"$RESULTS"
}

# Interleaved rounds: every case and target once per round, so drift on the shared machine hits
# all of them alike; the report takes medians over rounds.
for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS ($((SECONDS - START)) s)" >&2
    # plain: fixed request, passthrough
    run_wrk plain:nginx nginx "$CONNS" bench/post.lua 0 "$r"
    run_wrk plain:haproxy haproxy "$CONNS" bench/post.lua 0 "$r"
    run_wrk plain:eng-off eng-off "$CONNS" bench/post.lua 0 "$r"
    # unique prompts: the proxies get the same script
    run_wrk unique:nginx nginx "$CONNS" bench/unique.lua 0 "$r"
    run_wrk unique:haproxy haproxy "$CONNS" bench/unique.lua 0 "$r"
    run_wrk unique:eng-on eng-on "$CONNS" bench/unique.lua 0 "$r"
    run_wrk unique:eng1-on eng1-on "$CONNS" bench/unique.lua 0 "$r"
    # cache hits: the fixed request against a cache-on Engine
    run_wrk hits:eng-on eng-on "$CONNS" bench/post.lua 0 "$r"
    run_wrk hits:eng1-on eng1-on "$CONNS" bench/post.lua 0 "$r"
    # stream:true against the whole-SSE upstream
    run_wrk stream:nginx nginx-sse "$CONNS" bench/post.lua 1 "$r"
    run_wrk stream:haproxy haproxy-sse "$CONNS" bench/post.lua 1 "$r"
    run_wrk stream:eng-off seng-off "$CONNS" bench/post.lua 1 "$r"
    run_wrk stream-unique:nginx nginx-sse "$CONNS" bench/unique.lua 1 "$r"
    run_wrk stream-unique:haproxy haproxy-sse "$CONNS" bench/unique.lua 1 "$r"
    run_wrk stream-unique:eng-on seng-on "$CONNS" bench/unique.lua 1 "$r"
    run_wrk stream-unique:eng1-on seng1-on "$CONNS" bench/unique.lua 1 "$r"
    run_wrk stream-hits:eng-on seng-on "$CONNS" bench/post.lua 1 "$r"
    run_wrk stream-hits:eng1-on seng1-on "$CONNS" bench/post.lua 1 "$r"
    # one connection, unique prompts (a cache-on Engine misses every time)
    run_wrk one:direct direct 1 bench/unique.lua 0 "$r"
    run_wrk one:nginx nginx 1 bench/unique.lua 0 "$r"
    run_wrk one:eng-off eng-off 1 bench/unique.lua 0 "$r"
    run_wrk one:eng-on eng-on 1 bench/unique.lua 0 "$r"
    # streaming probe against the paced simulator
    probe probe:direct sim "$r"
    probe probe:nginx nginx-sim "$r"
    probe probe:eng-off peng-off "$r"
    probe probe:eng-on peng-on "$r"
done
ELAPSED=$((SECONDS - START))

python3 bench/report.py "$RESULTS" "$WORK/idle.txt" "$WORK/processes.txt" "$CONNS" "$DUR" "$NPROC" "$ELAPSED" \
    "$(cat "$WORK/upstream.txt")" | tee bench/results/latest.md
echo "work directory (logs, every wrk output): $WORK" >&2
