"""The hub and one source's mapping: frames of every kind in, Control/Deform out; limits, owners,
calibration, deformations from continuous quantities, presets through the hub."""

from __future__ import annotations

import numpy as np
import pytest

from sensorsynth.instrument_file import load
from sensorsynth.mapping.hub import MAX_SOURCES_PER_OWNER, MappingHub
from sensorsynth.mapping.presets import PresetTable, load_preset
from sensorsynth.protocol.commands import Control, Deform, Rejected
from tests.mapping.streams import REPO, basicmotions, hand_stream


@pytest.fixture(scope="module")
def guitar():
    return load(REPO / "models" / "guitar.instrument")


@pytest.fixture()
def hub(guitar):
    return MappingHub(lambda name: guitar if name == "guitar" else None)


def controls(cmds):
    return [c for c in cmds if isinstance(c, Control)]


def run(hub, owner, source, kind, t, frames, **kw):
    out = []
    for ti, f in zip(t, frames):
        out += hub.sensor(owner, source, kind, f, ti, ti, "guitar", **kw)
    return out


def test_moving_plays_the_instruments_vocabulary_and_still_is_silent(hub, guitar):
    k = guitar.spec.control_plane_dim
    _, t, frames = basicmotions("running", rate_hz=60)[0]
    played = controls(run(hub, "a", "phone", "motion", t, frames))
    assert len(played) >= 25
    cap = guitar.manifest.mapping.cap
    for c in played:
        v = np.asarray(c.values)
        assert v.size == k and v.min() >= 0 and 0 < v.max() <= cap + 1e-9
        assert (v > 0).sum() <= 4  # sparse, like the instrument's own frames
    _, t, frames = basicmotions("standing", rate_hz=60)[3]
    assert not controls(run(hub, "a", "watch2", "motion", t, frames))
    t, frames = hand_stream("still", 3.0, 30.0)
    assert not run(hub, "a", "hand", "hand", t, frames, hand="Left")


def test_raw_sources_of_any_width_play_when_moved(hub):
    for width in (1, 3, 40):
        t = np.arange(0, 2, 1 / 60)
        still = np.full((t.size, width), 0.5)
        assert not run(hub, "b", f"still{width}", "raw", t, still)
        moving = 0.5 + 0.45 * np.sin(2 * np.pi * 2 * t)[:, None] * np.ones(width)
        assert len(controls(run(hub, "b", f"moving{width}", "raw", t, moving))) >= 4


def test_owners_and_sources_are_independent_and_forgotten(hub):
    t = np.arange(0, 1, 1 / 60)
    frames = 0.5 + 0.45 * np.sin(2 * np.pi * 2 * t)[:, None]
    a = controls(run(hub, "x", "s", "raw", t, frames))
    b = controls(run(hub, "y", "s", "raw", t, frames))
    assert len(a) == len(b) > 0
    assert ("x", "s") in hub.sources
    hub.forget("x")
    assert ("x", "s") not in hub.sources and ("y", "s") in hub.sources


def test_limits_and_refusals(hub):
    with pytest.raises(Rejected) as info:
        hub.sensor("c", "phone", "motion", [0.0] * 8, 0.0, 0.0, "guitar")
    assert info.value.kind == "wrong_count"
    with pytest.raises(Rejected) as info:
        hub.sensor("c", "bad name!", "raw", [0.0], 0.0, 0.0, "guitar")
    assert info.value.kind == "bad_source"
    with pytest.raises(Rejected) as info:
        hub.sensor("c", "s", "raw", [float("nan")], 0.0, 0.0, "guitar")
    assert info.value.kind == "nonfinite"
    with pytest.raises(Rejected) as info:
        hub.sensor("c", "s", "raw", [0.0], 0.0, 0.0, "nope")
    assert info.value.kind == "unknown_instrument"
    for i in range(MAX_SOURCES_PER_OWNER):
        hub.sensor("d", f"s{i}", "raw", [0.0], 0.0, 0.0, "guitar")
    with pytest.raises(Rejected) as info:
        hub.sensor("d", "one-too-many", "raw", [0.0], 0.0, 0.0, "guitar")
    assert info.value.kind == "too_many_sources"


def test_a_source_that_changes_width_starts_over(hub):
    hub.sensor("e", "s", "raw", [0.0, 1.0], 0.0, 0.0, "guitar")
    hub.sensor("e", "s", "raw", [0.0, 1.0, 2.0], 0.1, 0.1, "guitar")
    assert hub.sources[("e", "s")].width == 3


def test_phone_tilt_deforms_only_once_it_moves(hub):
    t = np.arange(0, 3, 1 / 60)
    frames = np.zeros((t.size, 9))
    out = run(hub, "f", "phone", "motion", t, frames)
    assert not [c for c in out if isinstance(c, Deform)]  # lying still: the instrument stays as it is
    frames[:, 8] = np.linspace(-60, 60, t.size)  # tilt left → right
    deforms = [c for c in run(hub, "f", "phone2", "motion", t, frames) if isinstance(c, Deform)]
    assert 10 <= len(deforms) <= 60  # rate-limited, only when it moved
    first, last = np.asarray(deforms[0].logits), np.asarray(deforms[-1].logits)
    assert first[0] > first[1] - 1 and last[1] > last[0]  # ends on the other variant


def test_hand_openness_deforms(hub):
    t, frames = hand_stream("open_close", 4.0, 30.0)
    deforms = [c for c in run(hub, "g", "hand", "hand", t, frames, hand="Right") if isinstance(c, Deform)]
    assert len(deforms) >= 8
    assert hub.sources[("g", "hand:Right")].state()["calibration"]["openness"]["mode"] == "auto"


def test_calibrate_sets_and_relearns(hub):
    hub.sensor("h", "knob", "raw", [5.0], 0.0, 0.0, "guitar")
    state = hub.calibrate("h", "knob", [0.0], [10.0])
    assert state["mode"] == "set" and state["hi"] == [10.0]
    assert hub.calibrate("h", "knob")["mode"] == "auto"
    with pytest.raises(Rejected):
        hub.calibrate("h", "nothing")
    with pytest.raises(Rejected):
        hub.calibrate("h", "knob", [0.0, 1.0], [1.0])


def test_preset_frames_play_through_the_hub(guitar):
    hub = MappingHub(lambda name: guitar, PresetTable([load_preset("touchosc")]))
    played = []
    for i, t in enumerate(np.arange(0, 2, 1 / 60)):
        item = hub.table.match("/1/fader1", (0.5 + 0.45 * np.sin(2 * np.pi * 2 * t),))
        for source, kind, values, spec in hub.preset(item, t):
            played += hub.sensor("osc", source, kind, values, t, t, "guitar", spec=spec)
        _, stale = hub.tick(t + 0.03)
        for source, kind, values, spec in stale:
            played += hub.sensor("osc", source, kind, values, t, t, "guitar", spec=spec)
    assert len(controls(played)) >= 4
    m = hub.sources[("osc", "touchosc")]
    assert m.width == 8 and m.state()["calibration"]["axes"]["mode"] == "set"


def test_a_preset_pan_axis_places_the_voice(guitar, tmp_path):
    from sensorsynth.protocol.commands import Pan

    path = tmp_path / "room.toml"
    path.write_text('name = "room"\n[[sources]]\nname = "room"\nkind = "raw"\nwidth = 2\ncalibration = "set"\n'
                    'lo = 0.0\nhi = 1.0\npan_axis = 1\n[[addresses]]\naddress = "/room"\nsource = "room"\n'
                    'axes = [0, 1]\n')  # fmt: skip
    hub = MappingHub(lambda name: guitar, PresetTable([load_preset(path)]))
    pans = []
    times = np.arange(0, 2, 1 / 100)
    for t in times:  # the pan axis sweeps 0 → 1 in 1.5 s, then holds; axis 0 keeps still
        item = hub.table.match("/room", (0.5, min(1.0, t / 1.5)))
        for source, kind, values, spec in hub.preset(item, t):
            pans += [c for c in hub.sensor("osc", source, kind, values, t, t, "guitar", spec=spec) if isinstance(c, Pan)]
    positions = [p.position for p in pans]
    assert len(pans) >= 10 and all(0.0 <= p <= 1.0 for p in positions)
    assert positions == sorted(positions) and positions[-1] > 0.95, positions
    assert len(pans) <= len(times) // 2 + 1, "frames every 10 ms, pans at most every 20 ms"
    path.write_text(path.read_text().replace("pan_axis = 1", "pan_axis = 2"))
    with pytest.raises(Exception, match="pan_axis"):
        load_preset(path)
