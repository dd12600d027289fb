"""Issue 12 item 9: a second engine-server on a port that an Engine (or any program) listens on
refuses to start, with a message naming the address and what to do, unless the operator asks for
sharing (server.share_port: true, --share-port). The Engine's own workers share the port as before."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import requests

from harness import ENGINE_BIN, chat_body, free_port, make_config, wait_until


@pytest.fixture
def port():
    """A free loopback port; its lock file (/tmp/engine-server.127.0.0.1.PORT.lock) is removed after."""
    p = free_port()
    yield p
    try:
        os.unlink(f"/tmp/engine-server.127.0.0.1.{p}.lock")
    except FileNotFoundError:
        pass


def second_instance(config_path, port, *args):
    return subprocess.run([ENGINE_BIN, "--config", str(config_path), "--port", str(port), *args],
                          capture_output=True, text=True, timeout=30)


def test_a_second_engine_on_the_same_port_refuses_to_start(sim, engine_factory, port):
    first = engine_factory(make_config([sim]), args=["--port", port])  # default workers: a supervisor
    assert first.port == port
    for args in ((), ("--workers", "1"), ("--workers", "3")):
        p = second_instance(first.config_path, port, *args)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert f"engine: 127.0.0.1:{port} is already served by another engine-server (pid {first.pid})" in p.stderr
        assert "server.share_port: true" in p.stderr and "--share-port" in p.stderr
        assert "engine listening" not in p.stdout
    # The first one is untouched and still serves every request.
    for i in range(6):
        with requests.Session() as s:
            assert s.post(first.url + "/v1/chat/completions", json=chat_body(f"still {i}", max_tokens=1), timeout=5).status_code == 200


def test_any_other_listener_on_the_port_is_refused(sim, engine_factory, port, tmp_path):
    # A program sharing the port the way the Engine's own listeners do (SO_REUSEPORT, same user),
    # which the kernel would let a second listener join silently.
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", port))
    other.listen()
    try:
        cfg = tmp_path / "e.yaml"
        cfg.write_text(make_config([sim]))
        for args in ((), ("--workers", "1")):
            p = second_instance(cfg, port, *args)
            assert p.returncode == 1, (args, p.stdout, p.stderr)
            assert f"engine: 127.0.0.1:{port} is already in use: another process listens on it" in p.stderr
    finally:
        other.close()


def test_sharing_on_request_and_the_port_is_free_again_after_a_stop(sim, engine_factory, port):
    first = engine_factory(make_config([sim], server={"workers": 1}), args=["--port", port])
    # Asked for: by flag, or by the config key.
    by_flag = engine_factory(make_config([sim], server={"workers": 1}), args=["--port", port, "--share-port"])
    by_key = engine_factory(make_config([sim], server={"workers": 2, "share_port": True}), args=["--port", port])
    assert by_flag.port == by_key.port == port
    pids = set()
    def spread():
        with requests.Session() as s:  # each new connection goes to one of the listeners
            pids.add(s.get(first.url + "/metrics", headers={"Accept": "application/json"}, timeout=5).json()["pid"])
        return len(pids) >= 3
    wait_until(spread, timeout=10, what="connections to reach all three Engines")
    for e in (by_flag, by_key, first):
        e.stop()
    # Everything stopped: the lock is released and a plain start succeeds (TIME_WAIT does not count).
    again = engine_factory(make_config([sim]), args=["--port", port])
    assert again.port == port and again.get("/livez").status_code == 200
