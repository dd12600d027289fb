"""Fixtures for the loopback integration tests: real redis-server, vllm-sim and engine-server processes
on free 127.0.0.1 ports, always stopped at teardown (process groups: SIGTERM, then SIGKILL).

Binaries: $ENGINE_BIN and $SIM_BIN (scripts/test.sh sets them), else .build/debug/{engine-server,vllm-sim}.
Helpers to import in tests live in harness.py (make_config, start_engine, start_sim, RawStream, ...).
Set SIM_EXTERNAL_URL (and SIM_EXTERNAL_MODEL) to point the `sim` fixture at a running server instead,
e.g. a real vLLM from shared/tools/vllm-cpu-up.sh; tests that need the simulator's own controls then skip.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Iterator

import pytest

import harness
from harness import (
    DELETE,
    BadUpstream,
    Engine,
    RedisServer,
    Sim,
    bad_upstream_config,
    make_config,
    make_config_dict,
    start_bad_upstream,
    start_engine,
    start_sim,
)

__all__ = ["DELETE", "make_config", "make_config_dict", "start_engine", "start_sim"]

SIM_EXTERNAL_URL = os.environ.get("SIM_EXTERNAL_URL", "").rstrip("/")
SIM_EXTERNAL_MODEL = os.environ.get("SIM_EXTERNAL_MODEL", harness.SIM_MODEL)


class ExternalSim(Sim):
    """Sim-like view of an already running server (SIM_EXTERNAL_URL): HTTP only, no process,
    and no /sim/* controls (the tests that use them are skipped)."""

    def __init__(self, url: str, model: str):  # no process: skip ManagedProcess.__init__
        scheme_host, _, port = url.rpartition(":")
        self.name = "external"
        self.host = scheme_host.split("//", 1)[-1]
        self.port = int(port)
        self.model = model
        self.proc = None
        self.log_path = None

    def stats(self) -> dict:
        pytest.skip("needs vllm-sim's /sim/stats (SIM_EXTERNAL_URL is set)")

    def configure(self, **settings: Any) -> dict | None:
        pytest.skip("needs vllm-sim's /sim/config (SIM_EXTERNAL_URL is set)")

    def reset(self) -> None:
        pytest.skip("needs vllm-sim's /sim/reset (SIM_EXTERNAL_URL is set)")

    def stop(self, timeout: float = 0) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session: .url ("redis://127.0.0.1:P/0"), .port, .stop(), .start()
    (same port, for outage tests), .command(*args), .flushall(), .log_path."""
    server = RedisServer()
    try:
        server.start()
    except FileNotFoundError:
        pytest.fail("redis-server is not installed: run scripts/setup.sh")
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, running and empty at the start of the test, and running again
    after it (a test may stop() it)."""
    redis_server.start()
    redis_server.flushall()
    yield redis_server
    redis_server.start()


# ---------------------------------------------------------------------------------------------
# vllm-sim
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Sim]]:
    """start(*args) -> Sim: `$SIM_BIN --port 0 *args`, e.g. start("--itl-ms", 20, "--kv-usage-override", 0.5).
    Every sim started through it is stopped at teardown."""
    started: list[Sim] = []

    def start(*args: Any, **kw: Any) -> Sim:
        if SIM_EXTERNAL_URL:
            if args:
                pytest.skip("needs vllm-sim's command-line options (SIM_EXTERNAL_URL is set)")
            return ExternalSim(SIM_EXTERNAL_URL, SIM_EXTERNAL_MODEL)
        s = start_sim(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., Sim]) -> Sim:
    """One vllm-sim with default options: .url ("http://127.0.0.1:P"), .port, .model, .proc, .stop()."""
    return sim_factory()


# ---------------------------------------------------------------------------------------------
# engine-server
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., Engine]]:
    """start(config, env=None, args=None) -> Engine, where config is YAML text (see make_config) or
    a dict; every engine started through it is stopped at teardown."""
    started: list[Engine] = []

    def start(config: str | dict, env: dict | None = None, args: list | None = None, **kw: Any) -> Engine:
        e = start_engine(config, env=env, args=args, **kw)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def engine(sim: Sim, engine_factory: Callable[..., Engine]) -> Engine:
    """An engine-server in front of the `sim` fixture, with make_config's defaults (no redis)."""
    return engine_factory(make_config([sim]))


# ---------------------------------------------------------------------------------------------
# bad_upstream.py: a misbehaving vLLM (issue 10)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_upstream_factory() -> Iterator[Callable[..., BadUpstream]]:
    """start(mode="ok", *args) -> BadUpstream: bad_upstream.py on a free port; stopped at teardown."""
    started: list[BadUpstream] = []

    def start(mode: str = "ok", *args: Any, **kw: Any) -> BadUpstream:
        u = start_bad_upstream(mode, *args, **kw)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


@pytest.fixture
def bad_upstream(bad_upstream_factory: Callable[..., BadUpstream]) -> BadUpstream:
    """One bad_upstream.py in mode "ok"; each request picks its fault with "x_bad_mode"."""
    return bad_upstream_factory()


@pytest.fixture
def bad_engine(bad_upstream: BadUpstream, engine_factory: Callable[..., Engine]) -> Engine:
    """An engine-server (make_config's worker count) in front of `bad_upstream`, configured by
    bad_upstream_config (admission off, breaker threshold 100, cache on)."""
    return engine_factory(bad_upstream_config([bad_upstream]))


# ---------------------------------------------------------------------------------------------
# Hooks: process logs on failure, and nothing left running
# ---------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM or SIGHUP (test.sh's `timeout`, a closed terminal) stops our servers first.
    def on_signal(signum, frame):
        harness.reap_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    harness.STARTED.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for p in list(harness.STARTED):
            if p.log_path is not None:
                report.sections.append((f"log of {p.name} ({p.log_path})", p.log_tail(80)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    harness.reap_all()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config) -> None:
    if exitstatus != 0 and harness._RUN_DIR is not None:
        terminalreporter.write_line(f"process logs and configs: {harness._RUN_DIR}")
