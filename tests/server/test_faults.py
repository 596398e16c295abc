"""Faults a headless installation meets: the sound card vanishing, a full disk while recording, the audio
stalling (the watchdog exits for a restart), SIGKILL and a restart that plays the same instrument again."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from .helpers import K, http_json, recorded, recorded_seconds, rms, wait_for

pytestmark = pytest.mark.slow  # faults injected into real servers


def test_the_sound_card_vanishing_falls_back_to_the_null_output(jack, start_server):  # noqa: F811
    # a fixed name: a server killed without cleaning up leaves its slot in JACK's registry (8 slots in all),
    # which the next server of the same name takes over, where a new name each run would fill it up
    name = "sensorsynth-test-vanish"
    jackd = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "22050", "-p", "64"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["jack_wait", "-w", "-t", "10", "-s", name], check=True, capture_output=True, timeout=20)
        server = start_server("--output", "sound", "--hostapi", "JACK",
                              env={"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"})
        assert "JACK" in http_json(server, "/health")["output"]["description"]
        wait_for(lambda: recorded_seconds(server) > 0.5, what="recording through JACK")
    finally:
        jackd.kill()
        jackd.wait()
    t0 = time.monotonic()
    h = wait_for(lambda: (lambda h: h if "null" in h["output"]["description"] else None)(http_json(server, "/health")),
                 timeout=10, what="the fallback to the null output")
    took = time.monotonic() - t0
    assert h["fallback"] and "stopped" in h["fallback"] and h["running"]
    assert took < 3.0, took
    assert "playing to the null output" in server.output()
    # the sound goes on: the recording keeps growing and still plays controls
    mark = recorded_seconds(server)
    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    wait_for(lambda: recorded_seconds(server) > mark + 1.0, what="the recording to go on")
    assert server.stop(timeout=30) == 0
    data, rate = recorded(server)
    assert rms(data[int(mark * rate) :]) > 0.01


def test_a_full_disk_stops_the_recording_not_the_sound(start_server):
    limit = 120_000  # bytes: the WAV outgrows this within about 3 s, and its writes then fail (EFBIG)
    server = start_server(preexec=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    h = wait_for(lambda: (lambda h: h if h["recording"]["failed"] else None)(http_json(server, "/health")),
                 timeout=20, what="the recording to fail")
    assert h["running"]
    blocks = h["callbacks"]
    time.sleep(0.5)
    assert http_json(server, "/health")["callbacks"] > blocks, "the audio goes on"
    assert "recording to" in server.output() and "stopped" in server.output()
    assert server.stop() == 0


def test_a_stalled_audio_path_exits_for_a_restart(start_server):
    server = start_server("--stall-exit-s", "1", record=False, env={"SENSORSYNTH_FAULT": "stall-audio-after:1"})
    try:
        code = server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the watchdog did not exit:\n{server.output()}")
    assert code == 3, server.output()
    assert "audio stalled" in server.output()


def test_sigkill_then_restart_plays_the_same_instrument(start_server):
    first = start_server("--instrument", "guitar")
    first.stop(sig=signal.SIGKILL)
    t0 = time.monotonic()
    again = start_server("--instrument", "guitar", models=first.models)
    ready = time.monotonic() - t0
    assert http_json(again, "/health")["instrument"] == "guitar"
    mark = recorded_seconds(again)
    SimpleUDPClient("127.0.0.1", again.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    time.sleep(1.0)
    assert again.stop() == 0
    data, rate = recorded(again)
    assert rms(data[int(max(0, mark - 0.1) * rate) :]) > 0.01
    print(f"restart to ready: {ready:.2f} s")
