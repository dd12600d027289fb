#!/usr/bin/env bash
# run.sh: build the Engine (release) and serve it on port 8000 with configs/default.yaml.
# Without VLLM_URL it starts the simulator (vllm-sim) on 127.0.0.1:8080 and points the Engine at it;
# with VLLM_URL set it uses that server. Extra arguments go to engine-server.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build -c release --static-swift-stdlib
bin_path=$(swift build -c release --show-bin-path)

if [[ ! -f configs/default.yaml ]]; then
    echo "run.sh: configs/default.yaml not found" >&2
    exit 1
fi

if [[ -n "${VLLM_URL:-}" ]]; then
    echo "run.sh: using vLLM at $VLLM_URL"
    exec "$bin_path/engine-server" --config configs/default.yaml --port 8000 "$@"
fi

sim_pid=""
engine_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    for pid in $engine_pid $sim_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $engine_pid $sim_pid; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "run.sh: VLLM_URL is not set: starting vllm-sim on 127.0.0.1:8080"
"$bin_path/vllm-sim" --port 8080 &
sim_pid=$!
for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$sim_pid" 2>/dev/null; then
        echo "run.sh: vllm-sim exited during startup (is port 8080 taken?)" >&2
        exit 1
    fi
    if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/health; then
        break
    fi
    sleep 0.2
done
if ! curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/health; then
    echo "run.sh: vllm-sim did not answer /health within 20 s" >&2
    exit 1
fi
export VLLM_URL=http://127.0.0.1:8080

# Not exec: this shell stays to stop the simulator when the Engine exits (or on Ctrl-C/TERM).
"$bin_path/engine-server" --config configs/default.yaml --port 8000 "$@" &
engine_pid=$!
status=0
wait "$engine_pid" || status=$?
engine_pid=""
exit "$status"
