#!/usr/bin/env bash
# bench/tools.sh: the load tools users point at a vLLM — guidellm and aiperf — run to completion
# against the Engine (issue 12), in front of vllm-sim (or a real vLLM: VLLM_URL=http://host:port
# and MODEL=<its model id>). Each tool's exit status and its request counts are checked: every
# request answered, none failed. Not part of scripts/test.sh: the two tools pull in several GB
# (torch among them); they go into their own venv (bench/.venv-tools, or TOOLS_VENV) on first use.
# Tokenizer: the tiny local model's (../shared/tools/vllm-cpu-up.sh builds it under
# ~/.cache/vllm-cpu/tiny-llama), or TOKENIZER=<dir or HF id>. Usage: bench/tools.sh [REQUESTS=40]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
VENV=${TOOLS_VENV:-bench/.venv-tools}
TOKENIZER=${TOKENIZER:-$HOME/.cache/vllm-cpu/tiny-llama}
MODEL=${MODEL:-sim-model}
[[ -e "$TOKENIZER/tokenizer.json" || "$TOKENIZER" != /* ]] || {
    echo "tools.sh: no tokenizer at $TOKENIZER (run ../shared/tools/vllm-cpu-up.sh once, or set TOKENIZER)" >&2
    exit 2
}
if [[ ! -x "$VENV/bin/guidellm" || ! -x "$VENV/bin/aiperf" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q guidellm aiperf
fi
swift build --product engine-server >/dev/null
swift build --product vllm-sim >/dev/null
BIN=$(swift build --show-bin-path)
WORK=$(mktemp -d /tmp/engine-tools.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer at $1" >&2; return 1; }

UPSTREAM=${VLLM_URL:-}
if [[ -z "$UPSTREAM" ]]; then
    SP=$(port)
    "$BIN/vllm-sim" --port "$SP" --model "$MODEL" --ttft-ms 5 --itl-ms 1 >"$WORK/sim.log" 2>&1 &
    pids+=($!)
    UPSTREAM=http://127.0.0.1:$SP
    wait_http "$UPSTREAM/health"
fi
EP=$(port)
cat >"$WORK/engine.yaml" <<EOF
server: {host: 127.0.0.1, port: $EP, workers: 0}
vllm: {instances: [{url: "$UPSTREAM"}]}
model_registry: {fast_model: $MODEL, large_model: $MODEL, fallback_model: $MODEL}
EOF
"$BIN/engine-server" --config "$WORK/engine.yaml" >"$WORK/engine.log" 2>&1 &
pids+=($!)
ENGINE=http://127.0.0.1:$EP
wait_http "$ENGINE/readyz"
status=0

echo "== guidellm: $N streamed chat requests, 4 concurrent, through $ENGINE"
if "$VENV/bin/guidellm" run --backend "kind=openai_http,target=$ENGINE,model=$MODEL,request_format=/v1/chat/completions" \
    --tokenizer "kind=huggingface_auto,model=$TOKENIZER" --profile kind=concurrent,streams=4 \
    --constraint "kind=max_requests,count=$N" --data kind=synthetic_text,prompt_tokens=64,output_tokens=16 \
    --output "kind=json,path=$WORK/guidellm.json" --disable-console-interactive >"$WORK/guidellm.log" 2>&1; then
    python3 - "$WORK/guidellm.json" "$N" <<'PY' || status=1
import json, sys
report = json.load(open(sys.argv[1]))
b = report["benchmarks"][0]
totals = b["metrics"]["request_totals"]
ok, errored = totals["successful"], totals["errored"]
print(f"guidellm: {ok} successful, {errored} errored")
sys.exit(0 if ok >= int(sys.argv[2]) and errored == 0 else 1)
PY
else
    echo "guidellm failed:"; tail -20 "$WORK/guidellm.log"; status=1
fi

echo "== aiperf: $N streamed chat requests, 4 concurrent, through $ENGINE"
if "$VENV/bin/aiperf" profile --model "$MODEL" --tokenizer "$TOKENIZER" --url "$ENGINE" --endpoint-type chat \
    --streaming --synthetic-input-tokens-mean 64 --output-tokens-mean 16 --request-count "$N" --concurrency 4 \
    --artifact-dir "$WORK/aiperf" >"$WORK/aiperf.log" 2>&1; then
    python3 - "$WORK/aiperf" "$N" <<'PY' || status=1
import json, pathlib, sys
f = next(pathlib.Path(sys.argv[1]).rglob("profile_export_aiperf.json"))
d = json.loads(f.read_text())
count = d["request_count"]["avg"] if isinstance(d.get("request_count"), dict) else d.get("request_count")
errors = (d.get("error_request_count") or {}).get("avg", 0) if isinstance(d.get("error_request_count"), dict) else (d.get("error_request_count") or 0)
print(f"aiperf: {count} requests, {errors} errors")
sys.exit(0 if count and count >= int(sys.argv[2]) and not errors else 1)
PY
else
    echo "aiperf failed:"; tail -20 "$WORK/aiperf.log"; status=1
fi
echo "tools.sh: logs in $WORK"
exit $status
