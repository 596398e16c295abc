"""The engine's speakers and level cap in-process (compiled path, null output, the bundled instrument): what
the output gains and the cap accept and refuse, that the cap can never be raised above its configured value,
the status's limiter and channels, the meter per channel, where voices start and go back to."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sensorsynth.protocol.commands import Control, Pan
from sensorsynth.render import kernel as K
from sensorsynth.render import placement
from sensorsynth.server.config import ConfigError, load_config
from sensorsynth.server.engine import Engine, EngineSettings
from sensorsynth.server.library import Library
from sensorsynth.server.meter import Meter
from sensorsynth.server.playout import NullOutput


RATE, BLOCK, CH = 22050, 64, 4


def make(library: Library, **settings) -> Engine:
    settings = {"channels": CH, **settings}
    return Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=4, seed=1,
                                          realtime_priority=0, **settings),
                  NullOutput(RATE, BLOCK, channels=settings["channels"]))  # fmt: skip


def wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_voices_start_where_the_rule_puts_them(library):
    pans = make(library, placement="fixed", voice_channels=[3, 2, 1, 0]).renderer.fixed_view("vpan")[:4, :, 0]
    assert np.array_equal(pans, np.eye(4, dtype=np.float32)[::-1])
    ring = make(library, placement="ring").renderer.fixed_view("vpan")[:4, :, 0]
    assert np.allclose(ring, np.eye(4), atol=1e-6)  # 4 voices spread over 4 speakers of a ring
    line = make(library, placement="line", voice_positions=[0.5] * 4).renderer.fixed_view("vpan")[0, :, 0]
    assert np.allclose(line, placement.line_gains(0.5, 4))


def test_output_gains_and_the_level_cap_accept_and_refuse(library):
    engine = make(library, level_cap_dbfs=-6.0)
    assert engine.status()["limiter"]["cap_dbfs"] == -6.0
    assert engine.renderer.level_cap == pytest.approx(10 ** (-6 / 20))
    engine.set_level_cap(-20.0)
    assert engine.status()["limiter"]["cap_dbfs"] == -20.0
    engine.set_level_cap(0.0)  # never above the configured cap
    assert engine.status()["limiter"]["cap_dbfs"] == -6.0
    assert engine.renderer.level_cap == pytest.approx(10 ** (-6 / 20))
    with pytest.raises(ValueError):
        engine.set_level_cap(float("nan"))
    engine.set_output_gains([1.0, 0.5, 0.0, 1.0])
    assert engine.status()["output"]["gains"] == [1.0, 0.5, 0.0, 1.0]
    for bad in ([1.0] * 3, [1.0, 1.0, 1.0, 1.5], [1.0, 1.0, 1.0, float("nan")], [-0.1, 1, 1, 1]):
        with pytest.raises(ValueError):
            engine.set_output_gains(bad)
    with pytest.raises(ValueError):
        engine.set_output_gains([1.0] * 4, ramp_ms=-1)
    status = engine.status()
    assert status["output"]["channels"] == CH and status["output"]["placement"] == "fixed"
    assert len(status["output"]["levels_dbfs"]) == CH


def test_a_playing_engine_limits_meters_per_channel_and_pans(library):
    engine = make(library, level_cap_dbfs=-12.0)
    k = library.entries["guitar"].instrument.spec.control_plane_dim
    engine.start()
    try:
        engine.set_output_gains([1.0, 1.0, 0.0, 1.0], ramp_ms=0.0)
        engine.channel_levels()  # a new count from here
        engine.submit(Control.of([50.0] * k), voice=2)  # far above the cap, on channel 2 (muted)
        engine.submit(Control.of([50.0] * k), voice=1)  # on channel 1
        wait(lambda: engine.renderer.counters["limited"] > 0)
        time.sleep(0.3)
        levels = engine.channel_levels()
        assert levels[1] is not None and levels[0] is None and levels[2] is None and levels[3] is None, levels
        limiter = engine.status()["limiter"]
        assert limiter["gain_reduction_db"] > 6.0, limiter
        peak = engine.take_level()[1]  # every sample that played so far
        assert 0.5 * 10 ** (-12 / 20) < peak <= 10 ** (-12 / 20) + 1e-6, peak
        engine.submit(Pan.of(0.0), voice=1)  # the line's first speaker: channel 0
        time.sleep(0.2)
        assert np.allclose(engine.renderer.fixed_view("vpan")[1, :, 0], [1, 0, 0, 0])
        engine.release_voice(1)  # back to where the rule puts it
        wait(lambda: np.allclose(engine.renderer.fixed_view("vpan")[1, :, 0], [0, 1, 0, 0]))
        assert engine.renderer.fixed_view("limiter")[K.L_CAP] == pytest.approx(10 ** (-12 / 20))
    finally:
        engine.stop()


def test_the_meter_counts_each_channel_for_each_reader():
    m = Meter(channels=2)
    assert m.channel_levels() == [None, None] and m.channel_levels("status") == [None, None]
    m.measure(np.stack([np.full(100, 0.5, np.float32), np.zeros(100, np.float32)], axis=1))
    assert m.channel_levels() == [pytest.approx(-6.0, abs=0.1), None]
    assert m.channel_levels() == [None, None], "a read starts a new count"
    assert m.channel_levels("status") == [pytest.approx(-6.0, abs=0.1), None], "each reader has its own"
    m.measure(np.full(10, 0.1, np.float32))  # mono frames on a 2-channel meter: the overall level only
    assert m.take_level()[1] == pytest.approx(0.5)


def test_the_config_refuses_what_cannot_play(tmp_path):
    assert load_config(None, {"output_channels": 8}).output_channels == 8
    with pytest.raises(ConfigError, match="compiled"):
        load_config(None, {"output_channels": 2, "audio_path": "python"})
    with pytest.raises(ConfigError, match="compiled"):
        load_config(None, {"output_channels": 2, "device": "torch:cpu"})
    with pytest.raises(ConfigError, match="voice_channels"):
        load_config(None, {"output_channels": 2, "voice_channels": [0, 2]})
    with pytest.raises(ConfigError, match="voice_positions"):
        load_config(None, {"voice_positions": [1.5]})
    with pytest.raises(ConfigError, match="level_cap_dbfs"):
        load_config(None, {"level_cap_dbfs": 3.0})
    with pytest.raises(ConfigError, match="output_channels"):
        load_config(None, {"output_channels": 65})
