"""A real ``sensorsynth serve`` process for the server tests: null output, free ports, a recording, and the
bundled instrument copied into a temporary models folder (so tests may add or corrupt files in it); a JACK
server (``jack``) and a headless Chromium (``browser``). Helpers the test modules share are in ``helpers.py``
(reading a running server) and ``pages.py`` (the phone page in Chromium): a test module never imports another."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "models" / "guitar.instrument"


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    osc_port: int
    ws_port: int
    record_path: Path | None
    models: Path
    log_path: Path
    sample_rate: int
    token: str | None = None  # the server's WebSocket token (from the ready file): browsers always need it

    def page(self, path: str = "/") -> str:
        """The address of a page with the token, as a browser must open it."""
        return f"{self.url}{path}?token={self.token}"

    @property
    def http_port(self) -> int:
        return self.ws_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout} s after {sig}:\n{self.output()}") from None


def jack_server_running(name: str | None = None) -> bool:
    """Whether a JACK server (the default one, or ``name``) answers. ``jack_lsp`` fails when none does (and
    when JACK is not installed); ``jack_wait -c`` would not do: it prints "not running" and still exits 0."""
    if not shutil.which("jack_lsp"):
        return False
    cmd = ["jack_lsp"] + (["-s", name] if name else [])
    env = {**os.environ, "JACK_NO_START_SERVER": "1"}
    return subprocess.run(cmd, capture_output=True, timeout=10, env=env).returncode == 0


def launch(tmp_path: Path, *args: str, record: bool = True, models: Path | None = None, timeout: float = 120.0,
           env: dict[str, str] | None = None, preexec=None) -> ServerHandle:
    if models is None:
        models = tmp_path / "models"
        models.mkdir(exist_ok=True)
        if not (models / BUNDLED.name).exists():
            shutil.copy(BUNDLED, models / BUNDLED.name)
    ready = tmp_path / f"ready-{time.monotonic_ns()}.json"
    record_path = tmp_path / "rec.wav" if record else None
    cmd = [sys.executable, "-m", "sensorsynth", "serve", str(models), "--output", "null", "--host", "127.0.0.1",
           "--osc-port", "0", "--ws-port", "0", "--ready-file", str(ready)]
    if record_path is not None:
        cmd += ["--record", str(record_path)]
    cmd += list(args)
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:  # the child keeps its own copy of the handle
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=preexec,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server not ready within {timeout} s:\n{log_path.read_text()}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return ServerHandle(proc, info["osc_port"], info["ws_port"], record_path, models, log_path, info["sample_rate"],
                        info.get("token"))


@pytest.fixture
def start_server(tmp_path):
    """Factory: ``start_server(*extra_args, record=True, models=None)`` → a running ServerHandle; every server
    still running at the end of the test is killed."""
    handles: list[ServerHandle] = []

    def factory(*args: str, **kwargs) -> ServerHandle:
        handle = launch(tmp_path, *args, **kwargs)
        handles.append(handle)
        return handle

    yield factory
    for h in handles:
        if h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait()


def jack_missing() -> str | None:
    """Why the JACK tests cannot run here, or None when a JACK server answers through PortAudio."""
    if not shutil.which("jack_lsp"):
        return "JACK is not installed (apt-get install jackd2)"
    if not jack_server_running():
        return "no JACK server is running (jackd --no-realtime -d dummy -r 22050 -p 64 &)"
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        return f"PortAudio is missing: {exc}"
    return None


@pytest.fixture
def jack():
    why = jack_missing()
    if why is not None:
        if os.environ.get("SENSORSYNTH_REQUIRE_JACK"):
            pytest.fail(f"SENSORSYNTH_REQUIRE_JACK is set but {why}")
        pytest.skip(why)


@pytest.fixture
def browser():
    """Debian's Chromium driven by playwright; the test skips where either is missing."""
    from .pages import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"no system Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A models folder holding the bundled instrument, scanned: for tests of an engine in-process."""
    from sensorsynth.server.library import Library

    models = tmp_path_factory.mktemp("models")
    shutil.copy(BUNDLED, models / BUNDLED.name)
    lib = Library(models)
    lib.scan(settle=False)
    return lib
