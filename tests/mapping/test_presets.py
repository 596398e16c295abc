"""Presets as data: every bundled file loads, units and axis orders are normalised, frames are assembled
from per-address updates, and bad files are refused naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensorsynth.mapping.presets import (
    FrameAssembler,
    PresetError,
    PresetTable,
    PresetValues,
    available,
    load_preset,
    quaternion_to_orientation,
)

BUNDLED = ("gyrosc", "sensors2osc", "touchdesigner", "touchosc", "wekinator", "zigsim")


def test_every_bundled_preset_loads_and_documents_its_source():
    assert set(available()) == set(BUNDLED)
    for name in BUNDLED:
        p = load_preset(name)
        assert p.name == name and p.about and p.addresses and p.sources
    assert load_preset("wekinator").ports == [6448]


def table(*names: str) -> PresetTable:
    return PresetTable([load_preset(n) for n in names])


def test_zigsim_units_axes_and_one_source_per_device():
    t = table("zigsim")
    acc = t.match("/ZIGSIM/phone-1/accel", (0.5, 0.0, -1.0))
    assert acc.source == "zigsim:phone-1" and acc.kind == "motion" and acc.width == 9
    assert acc.axes == (0, 1, 2) and acc.values == pytest.approx((4.903325, 0.0, -9.80665))
    gyro = t.match("/ZIGSIM/phone-2/gyro", (1.0, 2.0, 3.0))  # rad/s about x, y, z
    assert gyro.source == "zigsim:phone-2" and gyro.axes == (4, 5, 3)  # → β (x), γ (y), α (z)
    assert gyro.values == pytest.approx(tuple(math.degrees(v) for v in (1.0, 2.0, 3.0)))
    assert t.match("/uuid/accel", (0.0, 0.0, 1.0)).source == "zigsim:uuid"  # the older form
    assert isinstance(t.match("/ZIGSIM/x/accel", (1.0,)), str)  # wrong count: a refusal message
    assert t.match("/ZIGSIM/x/unknown", (1.0,)) is None


@pytest.mark.parametrize("axis, angle, want", [
    ("z", 90.0, (90.0, 0.0, 0.0)),
    ("x", 30.0, (0.0, 30.0, 0.0)),
    ("y", -20.0, (0.0, 0.0, -20.0)),
])
def test_quaternion_to_device_orientation(axis, angle, want):
    h = math.radians(angle) / 2
    q = {"x": (math.sin(h), 0, 0), "y": (0, math.sin(h), 0), "z": (0, 0, math.sin(h))}[axis]
    got = quaternion_to_orientation(*q, math.cos(h))
    assert got == pytest.approx(want, abs=1e-6)
    assert quaternion_to_orientation(0, 0, 0, 1) == pytest.approx((0.0, 0.0, 0.0))


def test_each_app_fills_the_motion_frame_in_its_units():
    t = table("sensors2osc", "gyrosc", "touchosc")
    assert t.match("/linearacceleration", (1.0, 2.0, 3.0)).values == (1.0, 2.0, 3.0)  # already m/s²
    assert t.match("/gyroscope", (0.0, 0.0, math.pi)).values == pytest.approx((0.0, 0.0, 180.0))
    assert t.match("/orientation", (10.0, 20.0, 30.0)).axes == (6, 7, 8)
    rrate = t.match("/gyrosc/rrate", (1.0, 0.0, 0.0))
    assert rrate.axes == (4, 5, 3) and rrate.values[0] == pytest.approx(57.29578)
    att = t.match("/gyrosc/gyro", (0.1, 0.2, 0.3))  # pitch, roll, yaw (rad) → β, γ, α (deg)
    assert att.axes == (7, 8, 6) and att.values == pytest.approx((5.729578, 11.459156, 17.188734))
    acc = t.match("/accxyz", (0.0, 0.0, -1.0))
    assert acc.source == "touchosc-motion" and acc.values[2] == pytest.approx(-9.80665)
    xy = t.match("/1/xy1", (0.25, 0.75))
    assert xy.source == "touchosc" and xy.axes == (5, 6) and xy.kind == "raw"


def test_touchdesigner_channels_and_vectors():
    t = table("touchdesigner")
    assert t.match("/chan3", (0.5,)).axes == (2,)
    assert t.match("/td/chan16", (0.5,)).axes == (15,)
    assert t.match("/tx", (0.5,)).axes == (0,)
    vec = t.match("/td", (0.1, 0.2, 0.3))
    assert vec.axes == () and vec.width == 16 and vec.values == (0.1, 0.2, 0.3)
    assert isinstance(t.match("/td", tuple([0.0] * 17)), str)


def pv(t: PresetTable, address: str, *values: float) -> PresetValues:
    item = t.match(address, tuple(values))
    assert isinstance(item, PresetValues)
    return item


def test_assembler_emits_a_frame_once_every_address_has_sent():
    t = table("zigsim")
    a = FrameAssembler(t)
    assert a.update(pv(t, "/ZIGSIM/d/accel", 0.1, 0.2, 0.3), 0.0) == []  # only one address known yet
    first = a.update(pv(t, "/ZIGSIM/d/gyro", 0.0, 0.0, 0.0), 0.001)
    assert len(first) == 1 and first[0][0] == "zigsim:d"
    assert a.update(pv(t, "/ZIGSIM/d/quaternion", 0, 0, 0, 1), 0.002) == []  # a third address appears
    assert a.update(pv(t, "/ZIGSIM/d/accel", 0.0, 0.0, 0.0), 0.016) == []
    (frame,) = a.update(pv(t, "/ZIGSIM/d/gyro", 1.0, 0.0, 0.0), 0.017)  # all three since the last: complete
    assert frame[1][4] == pytest.approx(57.29578) and frame[1][0] == 0.0
    assert a.update(pv(t, "/ZIGSIM/d/quaternion", 0, 0, 0, 1), 0.018) == []  # then once per round


def test_assembler_repeat_stale_and_bundle_end():
    t = table("touchdesigner")
    a = FrameAssembler(t)
    assert a.update(pv(t, "/tx", 0.1), 0.0) == []
    (frame,) = a.update(pv(t, "/tx", 0.2), 0.016)  # /tx again: the sender's next frame began
    assert frame[1][0] == pytest.approx(0.1)
    assert a.flush(now=0.02) == []  # pending for 4 ms: not stale yet
    (stale,) = a.flush(now=0.05)
    assert stale[1][0] == pytest.approx(0.2)
    a.update(pv(t, "/ty", 0.7), 0.06)
    (bundled,) = a.flush(sources={"td"})
    assert bundled[1][1] == pytest.approx(0.7) and a.flush(sources={"td"}) == []
    (vector,) = a.update(pv(t, "/td", 0.3, 0.4), 0.07)  # a whole vector is a frame at once
    assert vector[1][:2] == pytest.approx([0.3, 0.4])


@pytest.mark.parametrize("text, fragment", [
    ('name = "x"\n[[addresses]]\naddress = "/a"\nsource = "nope"\n', "does not define"),
    ('name = "x"\n[[sources]]\nname = "s"\nkind = "raw"\nwidth = 2\n[[addresses]]\naddress = "/a"\n'
     'source = "s"\naxes = [5]\n', "beyond"),
    ('name = "x"\n[[sources]]\nname = "s:{2}"\n[[addresses]]\naddress = "/*/a"\nsource = "s:{2}"\n', "{2}"),
    ('name = "x"\ncolour = "blue"\n', "colour"),
    ('name = "x"\n[[sources]]\nname = "m"\nkind = "motion"\nwidth = 3\n', "9 values"),
    ('name = "x"\n[[sources]]\nname = "s"\n[[addresses]]\naddress = "no-slash"\nsource = "s"\n', "address"),
    ('name = = "x"\n', "not valid TOML"),
])
def test_bad_preset_files_are_refused_naming_the_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PresetError) as info:
        load_preset(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_unknown_preset_name_lists_the_bundled_ones():
    with pytest.raises(PresetError, match="touchdesigner"):
        load_preset("nonesuch")


def test_a_preset_file_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nports = [0]\n[[sources]]\nname = "knob"\nkind = "raw"\nwidth = 1\n'
                    '[[addresses]]\naddress = "/knob"\nsource = "knob"\naxes = [0]\nscale = 0.01\n')
    t = PresetTable([load_preset(path)])
    assert t.match("/knob", (50.0,)).values == (0.5,) and t.ports == [0]
    assert np.isclose(t.match("/knob", (100.0,)).values[0], 1.0)
