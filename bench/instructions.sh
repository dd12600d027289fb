#!/usr/bin/env bash
# bench/instructions.sh: user-space instructions per request, counted by callgrind, for the Engine
# (default config: workers 0) and for nginx, on the fixed upstream of bench/run.sh. It needs no
# hardware counters (many VMs have none: `perf stat -e instructions` says "not supported", and
# bench/run.sh then has no instruction tables), and the same binaries give the same counts run
# after run, whatever else the machine is doing: this is the A/B measure for a change, where
# bench/run.sh's wall-clock figures move with the machine. It is not the CPU a request costs: it
# leaves out the kernel (about half of a proxied request) and how fast the instructions run.
# Usage: [CONNS=32] bench/instructions.sh [SECONDS=6]    Writes bench/results/instructions.md.
#
# Each target runs under `valgrind --tool=callgrind --trace-children=yes` (the Engine's workers and
# private redis-server included; nginx as one process, see below); per case: a 2 s warm-up (a hit case then
# finds its answer stored), callgrind's counters zeroed in every process of the target, a
# `wrk -t1 -c$CONNS` run, then each process's counters dumped and summed, divided by the requests
# wrk completed. Under valgrind every target runs ~50x slower than natively, so the batching a
# target gets per wake-up differs from a full-speed run; the counts are for comparing binaries and
# targets within one run of this script.
# Two caveats on what valgrind runs:
#  - valgrind hides SHA-NI, so nettle's SHA-256 (the Engine's cache keys) runs its generic x86_64
#    code: ~10x what it costs natively. The table shows the Engine's counts with and without that
#    function (`_nettle_sha256_compress_x86_64`); the ratio to nginx is given for both.
#  - valgrind hides AVX-512: simdjson runs its AVX2 (haswell) kernel, not the icelake one; and a
#    large memcpy (rep movsb) counts one instruction per byte.
# valgrind 3.19 (Debian 12) cannot read the DWARF 5 of a Swift 6 build: the binary is run from a
# copy without its debug sections (strip --strip-debug); function names stay (symbol table).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-6}
CONNS=${CONNS:-32}

bash scripts/setup.sh --bench >/dev/null
swift build -c release --static-swift-stdlib --product engine-server >/dev/null
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d /tmp/engine-instructions.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/body" "$WORK/proxy" "$WORK/upstream-body" "$WORK/cg" bench/results
strip --strip-debug "$BIN/engine-server" -o "$WORK/engine-server"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 300); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$1/health" && return 0; sleep 0.1; done; echo "no answer on $1" >&2; return 1; }
CG=(valgrind --tool=callgrind --trace-children=yes "--callgrind-out-file=$WORK/cg/%p.out")

# The fixed upstream runs natively (it is not measured).
UP_JSON=$(port); UP_SSE=$(port)
python3 bench/upstream.py "$WORK" bench/upstream.conf.template "$UP_JSON" "$UP_SSE" >/dev/null
nginx -c "$WORK/upstream.conf" -p "$WORK" >"$WORK/upstream.log" 2>&1 & pids+=($!)
wait_http "$UP_JSON"; wait_http "$UP_SSE"

declare -A PORT ROOT
NG_PLAIN=$(port); NG_SSE=$(port)
sed -e "s#__DIR__#$WORK#g" -e "s#__WORKERS__#$(nproc)#" -e "s#__PLAIN_UP__#$UP_JSON#" -e "s#__SSE_UP__#$UP_SSE#" \
    -e "s#__SIM_UP__#$UP_JSON#" -e "s#__PLAIN_PORT__#$NG_PLAIN#" -e "s#__SSE_PORT__#$NG_SSE#" -e "s#__SIM_PORT__#$(port)#" \
    bench/nginx.conf.template >"$WORK/nginx.conf"
# One nginx process (master_process off, one worker's sockets: with `reuseport` nginx opens a
# listening socket per configured worker, and the ones no process serves would hold connections):
# callgrind_control cannot reach a worker that nginx's master forked without exec (it hangs), and
# one process serves a request with the same instructions as one of several workers.
sed -i -e 's/^daemon off;/daemon off;\nmaster_process off;/' -e 's/^worker_processes .*/worker_processes 1;/' "$WORK/nginx.conf"
"${CG[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 & pids+=($!)
PORT[nginx]=$NG_PLAIN; PORT[nginx-sse]=$NG_SSE; ROOT[nginx]=${pids[-1]}; ROOT[nginx-sse]=${pids[-1]}

start_engine() { # NAME CACHE UPSTREAM-PORT
    local p; p=$(port)
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1.yaml" <<YAML
server: {host: 127.0.0.1, log_level: warning, access_log: false, workers: 0}
vllm: {instances: [{url: "http://127.0.0.1:$3"}]}
cache: {enabled: $2}
model_registry: {fast_model: sim-model, large_model: sim-model, fallback_model: sim-model}
YAML
    XDG_RUNTIME_DIR=$WORK/$1 "${CG[@]}" "$WORK/engine-server" --config "$WORK/$1.yaml" --port "$p" >"$WORK/$1.log" 2>&1 & pids+=($!)
    PORT[$1]=$p; ROOT[$1]=${pids[-1]}
}
start_engine eng-off false "$UP_JSON"
start_engine eng-on true "$UP_JSON"
start_engine seng-off false "$UP_SSE"
start_engine seng-on true "$UP_SSE"
for t in nginx nginx-sse eng-off eng-on seng-off seng-on; do wait_http "${PORT[$t]}"; done
sleep 2 # every worker of every target listening

# measure NAME TARGET SCRIPT STREAM: one line "NAME TARGET requests Ir/req Ir-without-SHA/req".
measure() {
    local url="http://127.0.0.1:${PORT[$2]}/v1/chat/completions" out req tot=0 sha=0 p f t s
    STREAM=$4 wrk -t1 -c"$CONNS" -d2s -s "bench/$3" "$url" >/dev/null
    local procs; procs=$(python3 bench/proctree.py list "${ROOT[$2]}" | cut -d' ' -f1)
    for p in $procs; do timeout 30 callgrind_control -z "$p" >/dev/null 2>&1 || true; done
    out=$(STREAM=$4 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "bench/$3" "$url")
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "instructions.sh: $1 on $2 had errors:" >&2; echo "$out" >&2; exit 1; fi
    req=$(echo "$out" | awk '/requests in/{print $1}')
    for p in $procs; do
        timeout 30 callgrind_control -d "$p" >/dev/null 2>&1 || continue
        f=$(ls -t "$WORK/cg/$p.out."* 2>/dev/null | head -1 || true)
        [[ -n "$f" ]] || continue
        t=$(awk '/^totals:/{print $2; exit}' "$f")
        # (awk reads to the end: leaving early would fail callgrind_annotate's write, and the pipe)
        s=$(callgrind_annotate --threshold=100 "$f" 2>/dev/null | awk '/_nettle_sha256_compress_x86_64/ && !v {gsub(",","",$1); v=$1} END {print v+0}')
        tot=$((tot + ${t:-0})); sha=$((sha + ${s:-0}))
    done
    echo "$1 $2 $req $((tot / req)) $(((tot - sha) / req))"
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
{
    measure plain nginx post.lua 0
    measure plain eng-off post.lua 0
    measure unique nginx unique.lua 0
    measure unique eng-on unique.lua 0
    measure hits eng-on post.lua 0
    measure stream nginx-sse post.lua 1
    measure stream seng-off post.lua 1
    measure stream-unique nginx-sse unique.lua 1
    measure stream-unique seng-on unique.lua 1
    measure stream-hits seng-on post.lua 1
} | tee -a "$RESULTS" >&2

python3 - "$RESULTS" "$DUR" "$CONNS" <<'PY' | tee bench/results/instructions.md
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
label = {"plain": "plain, fixed request (Engine: cache off)", "unique": "plain, every prompt unique (Engine: cache on, all stages)",
         "hits": "Engine cache hits (vs nginx passthrough)", "stream": "stream, 50-event upstream in one read (Engine: cache off)",
         "stream-unique": "stream, every prompt unique (Engine: cache on)", "stream-hits": "Engine streamed cache hits (vs nginx)"}
base = {"hits": "plain", "stream-hits": "stream"}
ngx = {r[0]: int(r[3]) for r in rows if r[1].startswith("nginx")}
print(f"### User-space instructions per request (callgrind; wrk -t1 -c{sys.argv[3]} -d{sys.argv[2]}s; bench/instructions.sh)\n")
print("| case | nginx | Engine | Engine without SHA-256 compress | Engine ÷ nginx | without SHA ÷ nginx |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r[1].startswith("nginx"):
        continue
    n = ngx[base.get(r[0], r[0])]
    e, es = int(r[3]), int(r[4])
    print(f"| {label[r[0]]} | {n/1000:.1f}k | {e/1000:.1f}k | {es/1000:.1f}k | {e/n:.2f}× | {es/n:.2f}× |")
print("\nEngine: default config (workers 0; with the cache on, the shared-memory cache and the private redis-server);"
      " every process of each target summed. SHA-256 runs nettle's generic code under valgrind (no SHA-NI): natively"
      " it costs ~10x less, so the truth lies near the right-hand columns.")
PY
