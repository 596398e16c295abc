"""The engine in-process, without a server: which driver plays, what submit refuses, how voices are given
out and back, and the measurements it reports. Null output, the bundled instrument."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sensorsynth.protocol.commands import Control, ControlChannel, Deform, Gain, Rejected, SelectInstrument
from sensorsynth.server.driver import CompiledDriver, ThreadDriver
from sensorsynth.server.engine import Engine, EngineSettings, driver_kind
from sensorsynth.server.faults import Faults
from sensorsynth.server.library import Library
from sensorsynth.server.playout import NullOutput


RATE, BLOCK = 22050, 64


def make(library: Library, audio_path: str = "compiled", faults: Faults = Faults(), **settings) -> Engine:
    return Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=3, seed=1,
                                          audio_path=audio_path, realtime_priority=0, **settings),
                  NullOutput(RATE, BLOCK), faults=faults)  # fmt: skip


def wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_driver_follows_the_audio_path_and_the_device():
    assert driver_kind(EngineSettings(RATE)) == "compiled"
    assert driver_kind(EngineSettings(RATE, audio_path="python")) == "python"
    assert driver_kind(EngineSettings(RATE, device="cuda")) == "python"  # the compiled path plays the numba renderer


@pytest.mark.parametrize("audio_path, driver", [("compiled", CompiledDriver), ("python", ThreadDriver)])
def test_each_driver_plays_an_event_and_reports_it(library, audio_path, driver):
    engine = make(library, audio_path)
    assert isinstance(engine.driver, driver) and engine.audio_path == audio_path
    assert (engine.path is not None) == (audio_path == "compiled")
    k = library.entries["guitar"].instrument.spec.control_plane_dim
    engine.start()
    try:
        wait(lambda: engine.renderer.time > 4 * BLOCK)
        engine.submit(Control(values=[0.8] * k))
        wait(lambda: engine.latency.latency_ms.count == 1)
        wait(lambda: engine.meter.peak > 0.01)
        st = engine.status()
    finally:
        engine.stop()
    assert st["running"] and st["error"] is None and st["audio_path"]["kind"] == audio_path
    assert st["latency_ms"]["count"] == 1 and 0 < st["latency_ms"]["p50"] < 1000
    assert st["events"]["events"] == 1 and st["callbacks"] > 0
    assert not engine.running


def test_submit_refuses_with_a_kind_and_never_anything_else(library):
    engine = make(library, "python")
    k = library.entries["guitar"].instrument.spec.control_plane_dim
    e = library.entries["guitar"].instrument.spec.expressivity
    cases = [
        (Control(values=[0.5] * (k + 1)), "wrong_count"),
        (Control(values=[0.5] * k, voice=3), "bad_voice"),
        (ControlChannel(index=k, value=0.5), "bad_index"),
        (Control(values=[1e39] + [0.0] * (k - 1)), "out_of_range"),
        (Deform(logits=[0.0] * (e + 1)), "wrong_count"),
        (SelectInstrument(name="nothing"), "unknown_instrument"),
    ]
    for cmd, kind in cases:
        with pytest.raises(Rejected) as err:
            engine.submit(cmd)
        assert err.value.kind == kind, (cmd, err.value)
    engine.submit(Control(values=[0.5] * k))  # accepted while not playing: it waits in the inbox
    engine.submit(ControlChannel(index=0, value=0.0))  # a zero channel is nothing to play
    engine.submit(Gain(gain=0.5))
    assert engine.inbox.posted == 2
    engine.stop()


def test_voices_are_given_out_and_back_to_the_default_instrument(library):
    engine = make(library, "python")
    v = engine.allocate_voice("client-a")
    assert v == 1 and engine.voices[v].owner == "client-a"
    engine.select(v, "guitar")  # the same instrument: nothing to do
    engine.release_voice(v)
    assert engine.voices[v].owner is None and engine.voices[v].instrument == engine.default_instrument
    assert engine.allocate_voice("b") == 1 and engine.allocate_voice("c") == 2 and engine.allocate_voice("d") is None
    engine.stop()


def test_an_injected_stall_stops_the_heartbeat(library):
    """Fault injection passed in as a value: the audio side loses the renderer, the heartbeat stops."""
    engine = make(library, "compiled", faults=Faults(stall_audio_after_s=0.2))
    engine.start()
    try:
        time.sleep(0.6)
        beat = engine.last_block_ns
        time.sleep(0.3)
        assert engine.last_block_ns == beat and engine.path.counters()["not_rendered"] > 0
    finally:
        engine.stop()


def test_blocks_reach_the_browser_stream_only_while_someone_listens(library):
    engine = make(library, "compiled")
    engine.start()
    try:
        wait(lambda: engine.renderer.time > 8 * BLOCK)
        assert not engine.stream
        engine.listeners += 1
        wait(lambda: len(engine.stream) >= 4)
        engine.listeners -= 1
    finally:
        engine.stop()
    starts = [s for s, _ in engine.stream]
    assert all(b.shape == (BLOCK,) for _, b in engine.stream) and np.all(np.diff(starts) % BLOCK == 0)
