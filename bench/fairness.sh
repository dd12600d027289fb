#!/usr/bin/env bash
# Fair admission benchmark (issue 14): a 10x flood from one tenant against a light one, through
# the Engine in front of a vllm-sim under KV pressure, under fairness: fifo and fairness: fair.
# Prints one JSON line per policy (bench/fairness_driver.py): per-tenant latency p50/p99 (queue
# wait included), tokens/s, Jain's index per client, Engine CPU ms per request.
#   bench/fairness.sh                                 # debug build bins, 15 s per policy
#   CONF=release SECONDS_PER_RUN=30 bench/fairness.sh
# Knobs (env): CONF (debug), SECONDS_PER_RUN (15), HEAVY (20 clients), LIGHT (2), WORKERS (1),
# CAP (6: admission_control.max_inflight_per_backend, the sim sized to match; 0 = no cap).
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${CONF:-debug}
BIN=${BIN:-$(swift build -c "$CONF" --show-bin-path)}
[[ -x $BIN/engine-server && -x $BIN/vllm-sim ]] || swift build -c "$CONF" --static-swift-stdlib --product engine-server --product vllm-sim
export ENGINE_BIN=$BIN/engine-server SIM_BIN=$BIN/vllm-sim
exec "${PY:-.venv/bin/python}" bench/fairness_driver.py "$@"
