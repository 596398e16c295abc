"""``sensorsynth serve --device cuda`` plays through the CUDA renderer: a real server process, under numba's
CUDA simulator where there is no GPU (a tiny instrument and two voices: the simulator is far slower than
realtime, so the null output's recording grows slowly, but it grows, and an OSC event sounds in it)."""

from __future__ import annotations

import ctypes.util
import json
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
from pythonosc.udp_client import SimpleUDPClient

from sensorsynth.instrument_file import save

from ..server.conftest import launch
from .instruments import make_instrument

TINY = dict(n_samples=2**12, control_plane_dim=3, n_resonances=2, expressivity=2, n_oscillators=3, attack_size=64,
            attack_frames=16, control_hop=64, deformation_frame=64)


def _seconds(path) -> float:
    try:
        return sf.info(str(path)).duration
    except RuntimeError:
        return 0.0


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_serve_device_cuda_plays_through_the_cuda_renderer(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    save(make_instrument(0, active=10, **TINY), models / "tiny.instrument")
    env = {} if ctypes.util.find_library("cuda") else {"NUMBA_ENABLE_CUDASIM": "1"}
    server = launch(tmp_path, "--device", "cuda", "--max-voices", "2", "--block-size", "256", models=models, env=env,
                    timeout=300)  # a first run compiles the host plan (cached after)
    try:
        assert "(numba-cuda)" in server.output()
        _wait(lambda: _seconds(server.record_path) > 0.05, 60, "the first recorded blocks")
        mark = _seconds(server.record_path)
        SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0, 0.5, 0.8])
        _wait(lambda: _seconds(server.record_path) > mark + 0.25, 90, "the blocks after the event")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.ws_port}/health", timeout=10) as r:
            status = json.loads(r.read())
    finally:
        assert server.stop() == 0, server.output()
    data, rate = sf.read(str(server.record_path), dtype="float32")
    before, after = data[: int(mark * rate) - 256], data[int(mark * rate) :]
    assert np.abs(before).max() < 1e-6  # silence until the event
    assert np.abs(after).max() > 0.01, server.output()
    gpu = status["gpu_block_us"]
    assert set(gpu) >= {"last", "p50", "p99", "max", "simulated"}
    assert gpu["simulated"] == bool(env) and (gpu["simulated"] or gpu["p50"] > 0)
