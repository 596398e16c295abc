"""The WebSocket messages of recording (sensorsynth/protocol/ws.py): upload, cancel, watch."""

from __future__ import annotations

import json

import pytest

from sensorsynth.protocol import ws


def parse(obj: dict):
    return ws.parse_client(json.dumps(obj))


def test_upload_cancel_and_watch_parse():
    up = parse({"type": "upload", "name": "my take", "size": 176444, "sha256": "ab" * 32})
    assert (up.type, up.name, up.size, up.replace) == ("upload", "my take", 176444, False)
    assert parse({"type": "upload", "size": 10}).name == "take" and parse({"type": "upload", "size": 10}).sha256 is None
    assert parse({"type": "cancel"}).job is None and parse({"type": "cancel", "job": "9f3a" * 8}).job == "9f3a" * 8
    assert parse({"type": "watch", "job": "0" * 32}).job == "0" * 32


@pytest.mark.parametrize("bad", [
    {"type": "upload"},                                   # no size
    {"type": "upload", "size": 0},
    {"type": "upload", "size": (1 << 20) + 1},            # more than a WebSocket frame may carry
    {"type": "upload", "size": 10, "sha256": "xyz"},
    {"type": "upload", "size": 10, "name": "x" * 101},
    {"type": "upload", "size": 10, "extra": 1},
    {"type": "cancel", "job": "not hex"},
    {"type": "watch"},
    {"type": "watch", "job": "g" * 32},
])
def test_bad_recording_messages_are_schema_errors(bad):
    with pytest.raises(ws.WireError) as e:
        parse(bad)
    assert e.value.code == "bad_schema" and e.value.ref == bad["type"]


def test_binary_frames_alone_are_still_refused():
    with pytest.raises(ws.WireError) as e:
        ws.parse_client(b"RIFF....WAVE")
    assert e.value.code == "binary_not_accepted"
