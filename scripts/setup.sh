#!/usr/bin/env bash
# setup.sh: install what the Engine needs to build and test, and only what is missing (idempotent).
# Debian packages via apt (one `apt-get update`, only when something is missing); a Python venv at .venv.
# Usage: scripts/setup.sh [--bench] [--promtool]   (--bench adds wrk nginx-light haproxy valgrind; --promtool adds prometheus)
set -euo pipefail
cd "$(dirname "$0")/.."

bench=0
promtool=0
for arg in "$@"; do
    case "$arg" in
        --bench) bench=1 ;;
        --promtool) promtool=1 ;;
        -h | --help)
            sed -n '2,4s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            echo "setup.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo_cmd=(sudo)
fi

# --- Debian packages -------------------------------------------------------------------------
# nettle-dev: SHA-256 (linked by CEventShim); libsimdjson-dev + libstdc++-12-dev: CRequestScan (C++);
# libzmq3-dev + libmsgpack-dev: CKVEvents (vLLM's KV-cache events: ZeroMQ, msgpack-c 4.x);
# curl: scripts/run.sh polls the simulator with it. The fuzz build (fuzz/run.sh, the test suite's fuzz
# smoke) needs nothing more: the Swift toolchain ships libFuzzer, the sanitizer runtimes and llvm-symbolizer.
wanted=(libevent-dev libhiredis-dev libyaml-dev libhttp-parser-dev libjansson-dev libsimdjson-dev libstdc++-12-dev nettle-dev libzmq3-dev libmsgpack-dev redis-server curl)
if ((bench)); then
    wanted+=(wrk nginx-light haproxy valgrind)
fi
if ((promtool)); then
    wanted+=(prometheus)
fi
# `python3 -m venv` needs ensurepip; Debian's own python3 has it only with python3-venv.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    wanted+=(python3-venv)
fi

is_installed() {
    # `dpkg -s` also succeeds for a removed package whose config files remain: read its Status.
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing=()
for pkg in "${wanted[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup.sh: Debian packages present: ${wanted[*]}"
else
    echo "setup.sh: installing missing Debian packages: ${missing[*]}"
    # `env` carries DEBIAN_FRONTEND through sudo, which resets the environment.
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Installing a server package may start its system service (init script); the tests start
    # their own instances on free ports, so stop the system ones to keep their ports free.
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            redis-server) services=(redis-server) ;;
            nginx-light) services=(nginx) ;;
            haproxy) services=(haproxy) ;;
            prometheus) services=(prometheus prometheus-node-exporter) ;;
            *) services=() ;;
        esac
        for svc in "${services[@]}"; do
            if command -v service >/dev/null 2>&1; then
                "${sudo_cmd[@]}" service "$svc" stop >/dev/null 2>&1 || true
            elif [[ -x "/etc/init.d/$svc" ]]; then
                "${sudo_cmd[@]}" "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
            fi
        done
    done
fi

# --- Python venv for the integration tests ----------------------------------------------------
venv=.venv
if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup.sh: $venv is broken (its interpreter does not start); recreating it"
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating Python venv at $venv"
    python3 -m venv "$venv"
fi
# prometheus_client: its text parser reads /metrics in the tests as Prometheus would.
if "$venv/bin/python" -c 'import pytest, requests, openai, prometheus_client' >/dev/null 2>&1; then
    echo "setup.sh: $venv has pytest, requests, openai, prometheus_client"
else
    echo "setup.sh: installing pytest requests openai prometheus_client into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check pytest requests openai prometheus_client
fi
