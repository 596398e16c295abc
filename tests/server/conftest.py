"""Fixtures of the server tests: a real ``sensorsynth serve`` process (``start_server``), a JACK server
(``jack``) and a headless Chromium (``browser``). The helpers they use live in ``helpers.py`` (imported from
there by the test modules; the names below stay importable from here for older tests)."""

from __future__ import annotations

import os

import pytest

from .helpers import BUNDLED, REPO, ServerHandle, jack_missing, jack_server_running, launch  # noqa: F401
from .pages import CHROMIUM, CHROMIUM_ARGS


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
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"no system Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
