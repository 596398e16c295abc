"""The OSC decoder's mapping addresses (pure): /sensorsynth/input, /learn, /calibrate, preset addresses."""

from __future__ import annotations

import math

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from sensorsynth.mapping.presets import PresetTable, PresetValues, load_preset
from sensorsynth.server.osc import CalibrateRequest, LearnRequest, OscDecoder, Rejection, SensorInput, parse_address

NOW = 1_750_000_000.0


def msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, str):
            b.add_arg(a, "s")
        elif isinstance(a, int):
            b.add_arg(a, "i")
        else:
            b.add_arg(a, "f")
    return b.build().dgram


def one(data: bytes, **kw):
    (item,) = OscDecoder(**kw).decode(data, NOW)
    return item


@pytest.mark.parametrize("address, route", [
    (b"/sensorsynth/input/td", ("input", None, "td")),
    (b"/sensorsynth/input/my-phone.1:a/motion", ("input.motion", None, "my-phone.1:a")),
    (b"/sensorsynth/voice/2/input/cam/hand", ("input.hand", 2, "cam")),
    (b"/sensorsynth/learn/record", ("learn.record", None, None)),
    (b"/sensorsynth/voice/1/learn/run", ("learn.run", 1, None)),
    (b"/sensorsynth/calibrate/td", ("calibrate", None, "td")),
])
def test_routes(address, route):
    assert parse_address(address) == route


@pytest.mark.parametrize("address", [b"/sensorsynth/input", b"/sensorsynth/input/a b", b"/sensorsynth/input/x/y",
                                     b"/sensorsynth/learn/teach", b"/sensorsynth/input/" + b"x" * 65,
                                     b"/sensorsynth/calibrate"])
def test_bad_routes(address):
    got = parse_address(address)
    assert isinstance(got, Rejection) and got.kind == "unknown_address"


def test_input_frames():
    item = one(msg("/sensorsynth/input/td", 0.25, 0.5, 1.0))
    assert item == SensorInput("td", "raw", (0.25, 0.5, 1.0))
    item = one(msg("/sensorsynth/voice/3/input/phone/motion", *[0.0] * 9))
    assert item.kind == "motion" and item.voice == 3 and len(item.values) == 9
    assert one(msg("/sensorsynth/input/i", 1, 2)).values == (1.0, 2.0)  # integers are numbers
    for bad, kind in ((msg("/sensorsynth/input/x"), "wrong_count"), (msg("/sensorsynth/input/x", "a"), "wrong_type"),
                      (msg("/sensorsynth/input/x", math.nan), "nonfinite")):
        item = one(bad)
        assert isinstance(item, Rejection) and item.kind == kind, item


def test_input_in_a_bundle_keeps_its_time_tag():
    def bundled(tag):
        b = OscBundleBuilder(tag)
        m = OscMessageBuilder("/sensorsynth/input/td")
        m.add_arg(0.5, "f")
        b.add_content(m.build())
        return b.build().dgram

    assert one(bundled(IMMEDIATELY)).at is None
    assert one(bundled(NOW + 0.25)).at == pytest.approx(NOW + 0.25, abs=1e-3)


@pytest.mark.parametrize("args, want", [
    ((), LearnRequest("record", True)),
    ((0,), LearnRequest("record", False)),
    ((1.0, "phone"), LearnRequest("record", True, "phone")),
    (("phone",), LearnRequest("record", True, "phone")),
])
def test_learn_record(args, want):
    assert one(msg("/sensorsynth/learn/record", *args)) == want


def test_learn_other_actions_and_refusals():
    assert one(msg("/sensorsynth/learn/train")) == LearnRequest("train", True, None, "ridge")
    assert one(msg("/sensorsynth/learn/train", "mlp")).model == "mlp"
    assert one(msg("/sensorsynth/learn/run", 0)) == LearnRequest("run", False)
    assert one(msg("/sensorsynth/voice/2/learn/replay", "td")) == LearnRequest("replay", True, "td", voice=2)
    assert one(msg("/sensorsynth/learn/clear")).action == "clear"
    assert one(msg("/sensorsynth/learn/train", "forest")).kind == "bad_name"
    assert one(msg("/sensorsynth/learn/record", 1, 2)).kind == "wrong_type"
    assert one(msg("/sensorsynth/learn/record", "no way")).kind == "bad_name"


def test_calibrate():
    assert one(msg("/sensorsynth/calibrate/td")) == CalibrateRequest("td")
    assert one(msg("/sensorsynth/calibrate/td", 0.0, -1.0, 1.0, 1.0)).values == (0.0, -1.0, 1.0, 1.0)
    assert one(msg("/sensorsynth/calibrate/td", 0.0, 1.0, 2.0)).kind == "wrong_count"


def test_preset_addresses_only_with_presets():
    data = msg("/wek/inputs", 0.1, 0.2)
    assert one(data).kind == "unknown_address"
    presets = PresetTable([load_preset("wekinator"), load_preset("zigsim")])
    item = one(data, presets=presets)
    assert isinstance(item, PresetValues) and item.source == "wek" and item.values == pytest.approx((0.1, 0.2))
    dec = OscDecoder(presets=presets)
    for _ in range(2):  # the route is cached: same answer the second time
        (item,) = dec.decode(msg("/ZIGSIM/dev/accel", 0.0, 0.0, 1.0), NOW)
        assert item.source == "zigsim:dev" and item.values[2] == pytest.approx(9.80665)
    (item,) = dec.decode(msg("/ZIGSIM/dev/accel", 1.0), NOW)
    assert isinstance(item, Rejection) and item.kind == "wrong_count"
    (item,) = dec.decode(msg("/ZIGSIM/dev/accel", "x", "y", "z"), NOW)
    assert item.kind == "wrong_type"
    (item,) = dec.decode(msg("/sensorsynth/nope", 1.0), NOW)  # sensorsynth's own space is never a preset's
    assert item.kind == "unknown_address"
