"""The applied-event log, the sounding-time clock arithmetic, and the OSC feedback's pure parts: targets,
the encoder (read back with python-osc, an independent decoder) and the bundle plan."""

from __future__ import annotations

import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from sensorsynth.server.config import ConfigError, load_config
from sensorsynth.server.events import Applied, EventLog, block_leaves_ns, mono_to_unix, sample_ns
from sensorsynth.server.feedback import (
    IMMEDIATELY, MAX_DATAGRAM, SILENCE_DBFS, TargetError, check_address, encode_bundles, encode_message,
    event_messages, level_message, parse_target, plan_bundles,
)  # fmt: skip
from sensorsynth.server.osc import ntp_to_unix, unix_to_ntp


# ------------------------------------------------------------------------------------------- the log
def test_nothing_is_recorded_while_nobody_listens():
    log = EventLog()
    sub = log.subscribe(active=False)
    log.record(0, 0, "control", (1.0,), "osc")
    assert not log.listening and log.seq == 0 and sub.take() == []
    sub.active = True
    log.record(64, 1, "gain", (0.5,), "ws")
    assert log.listening
    (ev,) = sub.take()
    assert ev == Applied(1, 64, 1, "gain", (0.5,), "ws", None)
    assert sub.take() == []


def test_every_reader_gets_every_event_and_loses_only_its_own_backlog():
    log = EventLog()
    small = log.subscribe(maxlen=2)
    big = log.subscribe(maxlen=100)
    for i in range(5):
        log.record(i, 0, "control", (float(i),), "osc")
    assert [e.sample for e in small.take()] == [0, 1]  # the oldest kept, in order
    assert small.dropped == 3
    assert [e.sample for e in big.take()] == [0, 1, 2, 3, 4] and big.dropped == 0
    big.close()
    small.active = False
    assert not log.listening


def test_wake_is_called_once_per_burst():
    log = EventLog()
    wakes = []
    sub = log.subscribe(wake=lambda: wakes.append(1))
    for i in range(3):
        log.record(i, 0, "deform", (0.0, 1.0), "osc")
    assert len(wakes) == 1
    sub.take()
    log.record(9, 0, "instrument", (), "midi", "guitar")
    assert len(wakes) == 2 and sub.take()[0].name == "guitar"


# ------------------------------------------------------------------------------------------- the clock
def test_a_sample_sounds_when_its_block_leaves_the_renderer():
    rate, block, offset = 48000, 64, 5_000_000_000
    assert block_leaves_ns(0, offset, rate, block) == offset
    assert block_leaves_ns(63, offset, rate, block) == offset  # same block
    assert block_leaves_ns(64, offset, rate, block) == offset + 64 * 10**9 // rate
    assert block_leaves_ns(48000 + 10, offset, rate, block) == offset + (48000 - 48000 % 64) * 10**9 // rate
    assert sample_ns(48000, offset, rate) == offset + 10**9


def test_monotonic_to_unix_and_back_to_an_osc_time_tag():
    now_mono, now_unix = 10**12, 1_800_000_000.25
    assert mono_to_unix(now_mono + 250_000_000, now_mono, now_unix) == pytest.approx(now_unix + 0.25)
    tag = unix_to_ntp(mono_to_unix(now_mono - 10**9, now_mono, now_unix))
    assert ntp_to_unix(tag, now_unix) == pytest.approx(now_unix - 1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("text, host, port", [("127.0.0.1:7000", "127.0.0.1", 7000), ("[::1]:9", "::1", 9),
                                              ("td.local:10000", "td.local", 10000)])  # fmt: skip
def test_targets_parse(text, host, port):
    t = parse_target(text)
    assert (t.host, t.port) == (host, port)


@pytest.mark.parametrize("text", ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":9000", "a b:1", "h:x"])
def test_bad_targets_are_refused(text):
    with pytest.raises(TargetError):
        parse_target(text)


def test_broadcast_and_multicast_need_to_be_allowed():
    for ip in ("255.255.255.255", "224.0.0.1", "239.1.2.3", "ff02::1"):
        with pytest.raises(TargetError, match="broadcast"):
            check_address(ip, allow_broadcast=False)
        assert check_address(ip, allow_broadcast=True) == ip
    with pytest.raises(TargetError):
        check_address("0.0.0.0", allow_broadcast=True)
    assert check_address("192.168.1.20", allow_broadcast=False) == "192.168.1.20"


def test_the_config_checks_feedback_targets(tmp_path):
    assert load_config(overrides={"osc_feedback": ["127.0.0.1:7000"]}).osc_feedback == ["127.0.0.1:7000"]
    with pytest.raises(ConfigError, match="osc_feedback"):
        load_config(overrides={"osc_feedback": ["nowhere"]})
    with pytest.raises(ConfigError, match="broadcast"):
        load_config(overrides={"osc_feedback": ["255.255.255.255:9000"]})
    ok = load_config(overrides={"osc_feedback": ["239.0.0.1:9000"], "osc_feedback_allow_broadcast": True})
    assert ok.osc_feedback_allow_broadcast


# ------------------------------------------------------------------------------------------- encoding
def test_messages_read_back_with_an_independent_decoder():
    m = OscMessage(encode_message("/sensorsynth/event/control", 3, 7, 0.5, "motion:phone"))
    assert m.address == "/sensorsynth/event/control" and m.params == [3, 7, 0.5, "motion:phone"]
    big = OscMessage(encode_message("/x", 1e300, -1e300, "", "abcd"))
    assert big.params[0] == pytest.approx(3.4028235e38) and big.params[2:] == ["", "abcd"]


def test_events_become_one_message_each_in_a_bundle_per_sample():
    k = np.zeros(8, np.float32)
    k[[1, 5]] = [0.25, 1.0]
    events = [Applied(1, 640, 0, "control", k, "osc"), Applied(2, 640, 2, "gain", (0.5,), "ws"),
              Applied(3, 704, 1, "deform", (0.0, 2.0), "midi"),
              Applied(4, 704, 1, "instrument", (), "ws", "marimba")]  # fmt: skip
    tags = {640: unix_to_ntp(1_800_000_000.0), 704: unix_to_ntp(1_800_000_000.5)}
    datagrams = plan_bundles(events, tags.__getitem__)
    assert len(datagrams) == 2
    first, second = (OscBundle(d) for d in datagrams)
    assert [(m.address, m.params) for m in first] == [
        ("/sensorsynth/event/control", [0, 1, 0.25, "osc"]), ("/sensorsynth/event/control", [0, 5, 1.0, "osc"]),
        ("/sensorsynth/event/gain", [2, 0.5, "ws"])]
    assert [(m.address, m.params) for m in second] == [
        ("/sensorsynth/event/deform", [1, "midi", 0.0, 2.0]), ("/sensorsynth/event/instrument", [1, "marimba", "ws"])]
    assert first.timestamp == pytest.approx(1_800_000_000.0, abs=1e-6)  # python-osc reads the tag as Unix time
    assert second.timestamp - first.timestamp == pytest.approx(0.5, abs=1e-6)


def test_large_bursts_split_into_datagrams_that_fit_one_frame():
    messages = [encode_message("/sensorsynth/event/control", 0, d, 1.0, "osc") for d in range(200)]
    datagrams = encode_bundles(IMMEDIATELY, messages)
    assert len(datagrams) > 1 and all(len(d) <= MAX_DATAGRAM for d in datagrams)
    got = [m.params[1] for d in datagrams for m in OscBundle(d)]
    assert got == list(range(200))


def test_the_level_message_has_one_value_per_channel():
    m = OscMessage(level_message([-12.5, None, -3.0]))
    assert m.address == "/sensorsynth/level" and m.params == [-12.5, SILENCE_DBFS, -3.0]
    assert event_messages(Applied(1, 0, 0, "control", np.zeros(4, np.float32), "osc")) == []


# ------------------------------------------------------------------------------------------- the engine's hook
def test_the_engine_records_what_it_applied_with_when_it_sounds(tmp_path):
    import shutil
    import time

    from sensorsynth.protocol.commands import Control, ControlChannel, Deform, Gain, Rejected, SelectInstrument
    from sensorsynth.server.engine import Engine, EngineSettings
    from sensorsynth.server.library import Library
    from sensorsynth.server.playout import NullOutput

    from .conftest import BUNDLED

    shutil.copy(BUNDLED, tmp_path / BUNDLED.name)
    shutil.copy(BUNDLED, tmp_path / "other.instrument")  # a second instrument to change to
    library = Library(tmp_path)
    library.scan(settle=False)
    rate, block = 22050, 64
    engine = Engine(library, EngineSettings(sample_rate=rate, block_size=block, max_voices=2, seed=1, realtime_priority=0,
                                            latency="fixed", fixed_delay_ms=100.0), NullOutput(rate, block))  # fmt: skip
    spec = library.entries["guitar"].instrument.spec
    engine.start()
    try:
        deadline = time.monotonic() + 10
        while engine.latency.offset_ns is None:
            assert time.monotonic() < deadline, "no block left the renderer"
            time.sleep(0.01)
        engine.submit(ControlChannel.of(2, 0.5))  # nobody listens: not recorded
        sub = engine.events.subscribe()
        now = time.monotonic_ns()
        engine.submit(ControlChannel.of(2, 0.5), now)
        engine.submit(Gain.of(0.5), voice=1, source="ws")
        engine.submit(Deform.of([0.0] * spec.expressivity), now, source="midi")
        engine.submit(SelectInstrument.of("guitar"), voice=1, source="ws")  # what it plays already: no change
        engine.submit(SelectInstrument.of("other"), voice=1, source="ws")
        with pytest.raises(Rejected):
            engine.submit(Control.of([1.0]))  # refused: not recorded
        events = sub.take()
        assert [(e.kind, e.voice, e.source) for e in events] == [
            ("control", 0, "osc"), ("gain", 1, "ws"), ("deform", 0, "midi"), ("instrument", 1, "ws")]
        control = events[0]
        assert control.values[2] == 0.5 and sum(control.values) == 0.5 and len(control.values) == spec.control_plane_dim
        assert events[3].name == "other" and events[1].values == (0.5,)
        engine.release_voice(1)  # the server's own change: back to the default instrument
        (back,) = sub.take()
        assert (back.kind, back.voice, back.name, back.source) == ("instrument", 1, "guitar", "server")
        # the fixed delay after it arrived, within a block (the sample clock's estimate is the least-delayed block)
        sounds = engine.sounding_ns(control.sample)
        assert (sounds - now) / 1e6 == pytest.approx(100.0, abs=1000 * block / rate + 5)
        assert engine.events.seq == 5  # the ignored first control was never recorded
    finally:
        engine.stop()


def test_announce_sends_a_plain_message_to_every_target(tmp_path):
    """What the scenes call (``Service.announce`` → ``Feedback.announce``): a plain message, now, to each target."""
    import asyncio
    import shutil
    import socket

    from sensorsynth.server.engine import Engine, EngineSettings
    from sensorsynth.server.feedback import Feedback
    from sensorsynth.server.library import Library
    from sensorsynth.server.playout import NullOutput

    from .conftest import BUNDLED

    shutil.copy(BUNDLED, tmp_path / BUNDLED.name)
    library = Library(tmp_path)
    library.scan(settle=False)
    engine = Engine(library, EngineSettings(sample_rate=22050, block_size=64, max_voices=1, realtime_priority=0),
                    NullOutput(22050, 64))  # fmt: skip
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in sinks:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)

    async def run() -> Feedback:
        fb = Feedback(engine, [f"127.0.0.1:{s.getsockname()[1]}" for s in sinks], level_hz=0)
        await fb.start()
        fb.announce("/sensorsynth/scene", "night", 2)
        with pytest.raises(ValueError):
            fb.announce("scene", "no leading slash")
        await asyncio.sleep(0.05)
        await fb.stop()
        return fb

    try:
        fb = asyncio.run(run())
        for s in sinks:
            m = OscMessage(s.recv(2048))
            assert m.address == "/sensorsynth/scene" and m.params == ["night", 2]
        assert fb.stats["announced"] == 1 and fb.stats["datagrams"] == 2
    finally:
        for s in sinks:
            s.close()
