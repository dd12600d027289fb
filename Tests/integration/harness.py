"""Process and protocol helpers for the loopback integration tests (fixtures live in conftest.py).

Every process started here binds a loopback port, writes stdout+stderr to a log file, runs in its own
process group, and is registered so that it is killed at fixture teardown or, at the latest, at exit.
Tests import what they need: `from harness import make_config, start_engine, RawStream, ...`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import requests

ROOT = Path(__file__).resolve().parents[2]
ENGINE_BIN = os.environ.get("ENGINE_BIN") or str(ROOT / ".build" / "debug" / "engine-server")
SIM_BIN = os.environ.get("SIM_BIN") or str(ROOT / ".build" / "debug" / "vllm-sim")
REDIS_BIN = os.environ.get("REDIS_BIN") or "redis-server"
SIM_MODEL = "sim-model"
STARTUP_TIMEOUT = 20.0  # seconds a process gets to print its "listening" line
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 10.0  # default timeout of the HTTP helpers
JSON_ACCEPT = {"Accept": "application/json"}  # /metrics answers JSON only when asked (else Prometheus text)

# Environment variables that the Engine reads as overrides of its config; never inherited by
# the processes started here (a developer's shell may have them set), only set through `env=`.
SCRUBBED_ENV = ("VLLM_URL", "REDIS_URL")

_RUN_DIR: Path | None = None
_LIVE: list["ManagedProcess"] = []  # every process started and not yet reaped
STARTED: list["ManagedProcess"] = []  # started during the current test (conftest clears it)


def run_dir() -> Path:
    """A directory for this pytest run's logs and config files (kept after the run for debugging)."""
    global _RUN_DIR
    if _RUN_DIR is None:
        _RUN_DIR = Path(tempfile.mkdtemp(prefix="engine-it-"))
    return _RUN_DIR


def free_port() -> int:
    """A currently free loopback TCP port (for servers that cannot bind port 0 themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


T = TypeVar("T")


def on_a_free_port(start: Callable[[int], T], taken: str, attempts: int = 5) -> tuple[T, int]:
    """start(port) on a port found free, and on another one when the server says (`taken`, in the
    RuntimeError of a process that exited) that it could not bind it: a port found free can go to
    another socket before the server binds it (a ZMQ publisher cannot be given port 0)."""
    for i in range(attempts):
        port = free_port()
        try:
            return start(port), port
        except RuntimeError as e:
            if i == attempts - 1 or taken not in str(e):
                raise
    raise AssertionError("unreachable")


def child_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """os.environ without SCRUBBED_ENV, then `env` applied (a None value removes that variable)."""
    out = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the test process dies (even by SIGKILL), so a
    killed pytest leaves no servers behind. Linux-only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class ManagedProcess:
    """A child process in its own process group, its output in `log_path` (stderr too, unless
    `stderr_path` names a file of its own)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str],
                 stderr_path: Path | None = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.stderr_path = Path(stderr_path) if stderr_path else None
        self._env = dict(env)
        self.proc: subprocess.Popen | None = None
        self._spawn()

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log, open(self.stderr_path or os.devnull, "ab") as err:
            log.write(f"### {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=err if self.stderr_path else subprocess.STDOUT,
                env=self._env,
                cwd=str(ROOT),
                start_new_session=True,  # own process group: killpg reaches its children too
                preexec_fn=_die_with_parent,
            )
        if self not in _LIVE:
            _LIVE.append(self)
        STARTED.append(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_line(self, pattern: str, timeout: float = STARTUP_TIMEOUT, after: int = 0) -> re.Match:
        """Waits until the log (from byte offset `after`) has a line matching `pattern`."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.log_path.read_bytes()[after:].decode(errors="replace")
            except FileNotFoundError:
                data = ""
            m = rx.search(data)
            if m:
                return m
            if not self.alive:
                raise RuntimeError(
                    f"{self.name} exited with status {self.returncode} before printing "
                    f"{pattern!r}\n--- {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"{self.name} did not print {pattern!r} within {timeout:.0f}s "
                    f"(is stdout flushed?)\n--- {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        """Sends `sig` to the whole process group."""
        if self.alive:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        """SIGSTOP: the process stays connected but stops answering (a hung server)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM to the group, SIGKILL after `timeout`; returns the exit status. Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL to the group, at once (a crash)."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.proc.pid if self.proc else None}>"


def reap_all() -> None:
    """Stops every process still registered (fixture teardown, session end, interpreter exit)."""
    for p in list(_LIVE):
        try:
            p.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass


atexit.register(reap_all)


def _require_binary(path: str, what: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FileNotFoundError(
            f"{what} binary not found at {path}: build it first (swift build), "
            f"or set {'ENGINE_BIN' if what == 'engine' else 'SIM_BIN'}"
        )


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


_counter = 0


def _next_name(prefix: str) -> str:
    global _counter
    _counter += 1
    return f"{prefix}-{_counter}"


# --------------------------------------------------------------------------------------------
# vllm-sim
# --------------------------------------------------------------------------------------------

SIM_READY = r"^vllm-sim listening on (\S+):(\d+)\s*$"


class HTTPServerProcess(ManagedProcess):
    """A managed process that serves HTTP on host:port: base URL and small request helpers."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.get(self.url + path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.post(self.url + path, **kw)

    def openai(self, **kw: Any):
        """An openai.OpenAI client for this server (see openai_client)."""
        return openai_client(self.url, **kw)


class Sim(HTTPServerProcess):
    """A running vllm-sim. `url` is the base URL without /v1 (as the Engine config wants it)."""

    host: str
    port: int
    model: str


    def stats(self) -> dict:
        """GET /sim/stats: {"requests_total", "aborted", "running", ...}."""
        r = self.get("/sim/stats")
        r.raise_for_status()
        return r.json()

    def configure(self, **settings: Any) -> dict | None:
        """POST /sim/config with the given fields (error_rate, kv_usage_override, itl_ms, ...)."""
        r = self.post("/sim/config", json=settings)
        r.raise_for_status()
        return r.json() if r.content else None

    def reset(self) -> None:
        """POST /sim/reset."""
        self.post("/sim/reset").raise_for_status()

    def metrics_text(self) -> str:
        r = self.get("/metrics")
        r.raise_for_status()
        return r.text

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of the first sample of `name` whose labels include `labels`, or None."""
        return metric_value(self.metrics_text(), name, **labels)


def start_sim(*args: Any, timeout: float = STARTUP_TIMEOUT, env: Mapping[str, str | None] | None = None) -> Sim:
    """Starts `$SIM_BIN --port 0 *args` and waits for `vllm-sim listening on HOST:PORT`."""
    _require_binary(SIM_BIN, "sim")
    argv = [SIM_BIN, "--port", "0", *map(str, args)]
    name = _next_name("vllm-sim")
    sim = Sim(name, argv, run_dir() / f"{name}.log", child_env(env))
    sim.model = SIM_MODEL
    str_args = list(map(str, args))
    for i, a in enumerate(str_args):
        if a == "--model" and i + 1 < len(str_args):
            sim.model = str_args[i + 1]
        elif a.startswith("--model="):
            sim.model = a.split("=", 1)[1]
    m = sim.wait_for_line(SIM_READY, timeout)
    sim.host, sim.port = m.group(1), int(m.group(2))
    return sim


# --------------------------------------------------------------------------------------------
# bad_upstream.py (a misbehaving vLLM, issue 10)
# --------------------------------------------------------------------------------------------

BAD_UPSTREAM = str(Path(__file__).with_name("bad_upstream.py"))
BAD_UPSTREAM_READY = r"^ready (\S+):(\d+)\s*$"


class BadUpstream(HTTPServerProcess):
    """A running bad_upstream.py: `url` for vllm.instances, `mode` its default answer. A request
    picks another with the body field `"x_bad_mode": NAME` (the Engine forwards the body, not
    client headers), e.g. chat_body("p", x_bad_mode="two_responses")."""

    host: str
    port: int
    mode: str

    def stats(self) -> dict:
        """GET /bad/stats: {"requests_total": N, "by_mode": {NAME: N}} (generation requests)."""
        r = self.get("/bad/stats")
        r.raise_for_status()
        return r.json()


def start_bad_upstream(mode: str = "ok", *args: Any, port: int | None = None,
                       timeout: float = STARTUP_TIMEOUT) -> BadUpstream:
    """Starts `bad_upstream.py --mode MODE --port PORT *args` (a free port unless given) with this
    interpreter and waits for its `ready HOST:PORT` line."""
    argv = [sys.executable, BAD_UPSTREAM, "--mode", mode, "--port", str(port or free_port()), *map(str, args)]
    name = _next_name("bad-upstream")
    up = BadUpstream(name, argv, run_dir() / f"{name}.log", child_env())
    up.mode = mode
    m = up.wait_for_line(BAD_UPSTREAM_READY, timeout)
    up.host, up.port = m.group(1), int(m.group(2))
    return up


def bad_upstream_config(upstreams: Any, **overrides: Any) -> str:
    """make_config for an Engine in front of bad upstreams: admission control off (nothing to
    measure), a breaker that does not open during a test of faults, the cache on, short retry
    backoff; `overrides` deep-merged on top."""
    base = {
        "admission_control": {"enabled": False},
        "circuit_breaker": {"failure_threshold": 100},
        "cache": {"enabled": True},
        "vllm": {"retry_backoff_seconds": 0.05},
    }
    return make_config(upstreams, **deep_merge(base, overrides))


# --------------------------------------------------------------------------------------------
# engine-server
# --------------------------------------------------------------------------------------------

ENGINE_READY = r"^engine listening on (\S+):(\d+)\s*$"


class Engine(HTTPServerProcess):
    """A running engine-server; `url` is its base URL, `config_path` the YAML it was given."""

    host: str
    port: int
    config_path: Path

    def metrics_json(self, **kw) -> dict:
        """GET /metrics as JSON (Accept: application/json) of whichever process answers."""
        r = self.get("/metrics", headers=JSON_ACCEPT, **kw)
        assert r.status_code == 200, r.text
        return r.json()



def openai_client(base_url: str, api_key: str = "test-key", **kw: Any):
    """An openai.OpenAI client for `base_url` + /v1, without retries and with a 10 s timeout."""
    import openai

    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", HTTP_TIMEOUT)
    return openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, **kw)


def start_engine(
    config_yaml_text: str | Mapping[str, Any],
    env: Mapping[str, str | None] | None = None,
    args: Sequence[Any] | None = None,
    timeout: float = STARTUP_TIMEOUT,
    separate_stderr: bool = False,
) -> Engine:
    """Writes the config (YAML text, or a dict rendered with to_yaml) to a file, starts
    `$ENGINE_BIN --config FILE --port 0 *args`, and waits for `engine listening on HOST:PORT`.
    The child's environment is os.environ without VLLM_URL/REDIS_URL, then `env`. With
    `separate_stderr`, stderr goes to `eng.stderr_path` and `eng.log_path` holds stdout alone."""
    _require_binary(ENGINE_BIN, "engine")
    text = config_yaml_text if isinstance(config_yaml_text, str) else to_yaml(config_yaml_text)
    name = _next_name("engine")
    config_path = run_dir() / f"{name}.yaml"
    config_path.write_text(text)
    argv = [ENGINE_BIN, "--config", str(config_path), "--port", "0", *map(str, args or ())]
    eng = Engine(name, argv, run_dir() / f"{name}.log", child_env(env),
                 stderr_path=run_dir() / f"{name}.stderr.log" if separate_stderr else None)
    eng.config_path = config_path
    m = eng.wait_for_line(ENGINE_READY, timeout)
    eng.host, eng.port = m.group(1), int(m.group(2))
    return eng


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a fixed loopback port; stop() and start() keep the port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.log_path = run_dir() / f"redis-{self.port}.log"
        self.dir = run_dir() / f"redis-{self.port}"
        self.dir.mkdir(exist_ok=True)
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.process.proc if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "RedisServer":
        """Starts (or restarts) the server on the same port and waits until PING answers."""
        if self.alive:
            return self
        argv = [
            REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir),
        ]  # fmt: skip
        self.process = ManagedProcess(f"redis-{self.port}", argv, self.log_path, child_env())
        deadline = time.monotonic() + timeout
        while True:
            try:
                if redis_command(self.port, "PING", timeout=1.0) == "PONG":
                    return self
            except OSError:
                pass
            if not self.process.alive:
                raise RuntimeError(
                    f"redis-server exited with status {self.process.returncode}\n"
                    f"--- {self.log_path}:\n{self.process.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.process.stop()
                raise TimeoutError(f"redis-server did not answer PING within {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stops the server (an outage); start() brings it back, empty, on the same port."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.stop()

    def command(self, *args: Any) -> Any:
        """Sends one command and returns the decoded reply (str, int, None, list)."""
        return redis_command(self.port, *args)

    def flushall(self) -> None:
        self.command("FLUSHALL")


class RedisError(Exception):
    pass


def redis_command(port: int, *args: Any, host: str = "127.0.0.1", timeout: float = 5.0) -> Any:
    """A one-shot RESP2 client: connects, sends `args`, reads one reply. Bulk strings come back as
    str (UTF-8, errors replaced); an error reply raises RedisError."""
    parts = [str(a).encode() if not isinstance(a, bytes) else a for a in args]
    req = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(req)
        f = s.makefile("rb")
        return _resp_read(f)


def _resp_read(f) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:n]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError(f"unexpected RESP line {line!r}")


# --------------------------------------------------------------------------------------------
# Config rendering
# --------------------------------------------------------------------------------------------

DELETE = object()  # in make_config overrides: remove that key from the defaults


def deep_merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    """Returns a copy of `base` with `overrides` merged in: dicts merge recursively, anything else
    (lists included) replaces; a value of DELETE removes the key."""
    out = dict(base)
    for k, v in overrides.items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _as_url(x: Any) -> str:
    return x if isinstance(x, str) else x.url


def make_config_dict(sim_urls: Any, **overrides: Any) -> dict:
    """The config of make_config as a dict."""
    if isinstance(sim_urls, (str, Sim)) or hasattr(sim_urls, "url"):
        sim_urls = [sim_urls]
    base = {
        "server": {"host": "127.0.0.1", "workers": 0},
        "vllm": {"instances": [{"url": _as_url(u)} for u in sim_urls]},
        "redis": {"url": ""},
        "model_registry": {
            "fast_model": SIM_MODEL,
            "large_model": SIM_MODEL,
            "fallback_model": SIM_MODEL,
        },
    }
    return deep_merge(base, overrides)


def make_config(sim_urls: Any, **overrides: Any) -> str:
    """YAML text of an Engine config: server.host 127.0.0.1, vllm.instances from `sim_urls` (URL
    strings or Sim objects, or one of them), redis.url "" (off), model_registry fast/large/fallback
    all sim-model; `overrides` are nested dicts deep-merged on top, e.g.
    make_config([sim], redis={"url": redis.url}, cache={"enabled": False})."""
    return to_yaml(make_config_dict(sim_urls, **overrides))


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid YAML double-quoted scalar
    if isinstance(v, Mapping) and not v:
        return "{}"
    if isinstance(v, (list, tuple)) and not v:
        return "[]"
    raise TypeError(f"cannot render {v!r} as YAML")


def _yaml_key(k: Any) -> str:
    k = str(k)
    return k if _PLAIN_KEY.match(k) and k.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "y", "n") else json.dumps(k)


def _yaml_lines(obj: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(v, (Mapping, list, tuple)) and v:
                lines.append(f"{pad}{_yaml_key(k)}:")
                lines.extend(_yaml_lines(v, indent + 2))
            else:
                lines.append(f"{pad}{_yaml_key(k)}: {_yaml_scalar(v)}")
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, (Mapping, list, tuple)) and item:
                sub = _yaml_lines(item, indent + 2)
                sub[0] = f"{pad}- {sub[0].lstrip()}"
                lines.extend(sub)
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        lines.append(pad + _yaml_scalar(obj))
    return lines


def to_yaml(obj: Mapping[str, Any]) -> str:
    """Block-style YAML for dicts, lists and scalars (no PyYAML needed)."""
    return "\n".join(_yaml_lines(obj, 0)) + "\n"


# --------------------------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for each sample line of a Prometheus text page."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for n, ls, v in parse_metrics(text):
        if n == name and all(ls.get(k) == str(val) for k, val in labels.items()):
            return v
    return None


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1 over a socket: exact bytes, chunked decoding, early close
# --------------------------------------------------------------------------------------------


def build_request(
    method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
    host: str = "127.0.0.1", port: int = 80,
) -> bytes:  # fmt: skip
    """HTTP/1.1 request bytes; a dict/list body is sent as JSON. Adds Host, Content-Length and
    Content-Type (for JSON) unless given."""
    hdrs = {k.lower(): (k, v) for k, v in (headers or {}).items()}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("content-type", ("Content-Type", "application/json"))
    elif isinstance(body, str):
        body = body.encode()
    hdrs.setdefault("host", ("Host", f"{host}:{port}"))
    if body is not None:
        hdrs.setdefault("content-length", ("Content-Length", str(len(body))))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.values()) + "\r\n"
    return head.encode() + (body or b"")


class RawStream:
    """A client connection that sends one request and reads the response incrementally:
    read_head(), then read_event() per SSE event or read_body(), and close() whenever (a quitter).

    >>> with RawStream(port, "POST", "/v1/chat/completions", {...}) as s:
    ...     status, headers = s.read_head()
    ...     first = s.read_event()
    """

    def __init__(
        self, port: int, method: str, path: str, body: Any = None,
        headers: Mapping[str, str] | None = None, host: str = "127.0.0.1", timeout: float = HTTP_TIMEOUT,
    ):  # fmt: skip
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(build_request(method, path, body, headers, host, port))
        self.raw = b""  # every byte received, as received
        self._buf = b""  # received, not yet parsed
        self._body = b""  # decoded body bytes not yet consumed by read_event
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.header_list: list[tuple[str, str]] = []
        self._chunked = False
        self._remaining: int | None = None  # content-length left, when not chunked
        self._chunk_left = 0
        self.complete = False  # the body ended as framed (last chunk, or content-length reached)
        self.eof = False  # the peer closed

    # -- receiving ----------------------------------------------------------------------------
    def _recv(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        self._buf += data
        return True

    def read_head(self) -> tuple[int, dict[str, str]]:
        """Status code and headers (names lowercased; repeated headers joined with ', ')."""
        while b"\r\n\r\n" not in self._buf:
            if not self._recv():
                raise ConnectionError(f"closed before the response head; got {self.raw!r}")
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.header_list.append((k, v.strip()))
            key = k.strip().lower()
            self.headers[key] = f"{self.headers[key]}, {v.strip()}" if key in self.headers else v.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            self._remaining = int(self.headers["content-length"])
            if self._remaining == 0:
                self.complete = True
        return self.status, self.headers

    def _decode_available(self) -> None:
        """Moves decoded body bytes from _buf to _body as far as framing allows."""
        if self._chunked:
            while not self.complete:
                if self._chunk_left > 0:
                    take = self._buf[: self._chunk_left]
                    self._body += take
                    self._buf = self._buf[len(take):]
                    self._chunk_left -= len(take)
                    if self._chunk_left > 0:
                        return
                    self._chunk_left = -2  # expect CRLF after the data
                if self._chunk_left == -2:
                    if len(self._buf) < 2:
                        return
                    if self._buf[:2] != b"\r\n":
                        raise ValueError(f"bad chunk terminator: {self._buf[:10]!r}")
                    self._buf = self._buf[2:]
                    self._chunk_left = 0
                if b"\r\n" not in self._buf:
                    return
                size_line, rest = self._buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:  # last chunk, then optional trailers, then an empty line
                    if rest.startswith(b"\r\n"):
                        self._buf = rest[2:]
                    elif b"\r\n\r\n" in rest:
                        self._buf = rest.split(b"\r\n\r\n", 1)[1]
                    else:
                        return
                    self.complete = True
                    return
                self._buf = rest
                self._chunk_left = size
        else:
            if self._remaining is None:
                self._body += self._buf
                self._buf = b""
            else:
                take = self._buf[: self._remaining]
                self._body += take
                self._buf = self._buf[len(take):]
                self._remaining -= len(take)
                if self._remaining == 0:
                    self.complete = True

    def read_event(self) -> str | None:
        """The next SSE event's text without its trailing blank line (e.g. 'data: {...}'), or None
        when the body ended (complete or connection closed) with no further full event."""
        if self.status is None:
            self.read_head()
        while True:
            self._decode_available()
            if b"\n\n" in self._body:
                ev, self._body = self._body.split(b"\n\n", 1)
                return ev.decode()
            if self.complete or self.eof:
                return None
            self._recv()

    def read_body(self) -> bytes:
        """The rest of the decoded body, until it is complete or the peer closes."""
        if self.status is None:
            self.read_head()
        while True:
            self._decode_available()
            if self.complete or self.eof:
                break
            self._recv()
        out, self._body = self._body, b""
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sse_payloads(body: bytes | str) -> list[str]:
    """Splits an SSE body into event payloads, asserting vLLM's framing: every event is exactly one
    `data: ...` line followed by a blank line (LF only), and the body ends with a blank line."""
    text = body.decode() if isinstance(body, bytes) else body
    assert "\r" not in text, "SSE body contains CR"
    assert text.endswith("\n\n"), f"SSE body does not end with a blank line: {text[-80:]!r}"
    out = []
    for ev in text[:-2].split("\n\n"):
        assert ev.startswith("data: ") and "\n" not in ev, f"bad SSE event: {ev!r}"
        out.append(ev[len("data: "):])
    return out


def sse_json(body: bytes | str) -> list[dict]:
    """The JSON chunks of an SSE body, asserting the framing and the final `data: [DONE]`."""
    payloads = sse_payloads(body)
    assert payloads and payloads[-1] == "[DONE]", f"stream does not end with [DONE]: {payloads[-1:]!r}"
    assert "[DONE]" not in payloads[:-1], "[DONE] before the end"
    return [json.loads(p) for p in payloads[:-1]]


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    """Polls `predicate()` until it returns a truthy value (returned), or raises AssertionError.
    A requests.Response counts as truthy whatever its status (requests makes a 4xx/5xx one falsy,
    which would turn `lambda: (r := eng.get(p)).status_code == 503 and r` into a silent timeout)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        else:
            if last or isinstance(last, requests.Response):
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def chat_body(content: str = "hi", model: str = SIM_MODEL, max_tokens: int = 8, temperature: Any = 0,
              **extra: Any) -> dict:
    """A small chat-completions request body; deterministic (temperature 0) unless told otherwise
    (temperature=None leaves it out), so that the cache and coalescing apply to it by default
    (cache.deterministic_only)."""
    t = {} if temperature is None else {"temperature": temperature}
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **t, **extra}


def completion_body(prompt: str = "hello world", model: str = SIM_MODEL, max_tokens: int = 8, temperature: Any = 0,
                    **extra: Any) -> dict:
    """A small completions request body; temperature 0 unless told otherwise (as chat_body)."""
    t = {} if temperature is None else {"temperature": temperature}
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, **t, **extra}


def worker_pids(sup_pid: int) -> list[int]:
    """The engine-server worker processes of the supervisor `sup_pid` (from /proc)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{p}/comm") as f:
                    name = f.read().strip()
                # The supervisor's children: its workers (and the private redis-server they share).
                if int(fields[1]) == sup_pid and name.startswith("engine-server"):
                    out.append(int(p))
            except OSError:
                pass
    return sorted(out)
