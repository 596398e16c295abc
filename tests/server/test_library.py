"""The models folder as the server sees it: every kind of bad file is refused with a clear reason, the last
good version of an instrument stays, and no name or link can reach outside the folder."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

from sensorsynth.server.library import Library, LibraryError, check_name

from .conftest import BUNDLED


@pytest.fixture
def folder(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(BUNDLED, models / "guitar.instrument")
    return models


def _with_manifest(data: bytes, change) -> bytes:
    """Rewrite the safetensors header's manifest (the bytes after it are unchanged)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["sensorsynth"])
    change(manifest, header)
    header["__metadata__"]["sensorsynth"] = json.dumps(manifest)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def test_names_that_could_leave_the_folder_are_refused():
    for bad in ["../guitar", "a/b", "..", ".hidden", "", "x" * 200, "guitar\x00", "C:\\x", "~root"]:
        with pytest.raises(LibraryError):
            check_name(bad)
    assert check_name("cello-2.take_1") == "cello-2.take_1"


def test_every_kind_of_bad_file_is_refused_and_the_good_one_stays(folder, tmp_path):
    good = BUNDLED.read_bytes()
    bad = {
        "truncated": good[: len(good) // 3],
        "zeros": b"\x00" * 4096,
        "empty": b"",
        "not-safetensors": b"RIFF....WAVEfmt " + b"\x01" * 100,
        "newer-version": _with_manifest(good, lambda m, h: m.update(format_version=99)),
        "wrong-shape": _with_manifest(good, lambda m, h: m["spec"].update(n_oscillators=63)),
        "bit-flip": good[:-64] + bytes(b ^ 0xFF for b in good[-64:]),
    }
    for name, data in bad.items():
        (folder / f"{name}.instrument").write_bytes(data)
    outside = tmp_path / "outside.instrument"
    shutil.copy(BUNDLED, outside)
    os.symlink(outside, folder / "escape.instrument")
    lib = Library(folder)
    change = lib.scan(settle=False)
    assert lib.names == ["guitar"]
    refused = {os.path.basename(p).removesuffix(".instrument"): why for p, why in change.refused}
    assert set(refused) == set(bad) | {"escape"}
    assert "outside the models folder" in refused["escape"]
    assert "version 99" in refused["newer-version"]
    for name, why in refused.items():
        assert why and len(why) < 2000, name
    # a refused version of a playing instrument keeps the last good one, and is reported once
    (folder / "guitar.instrument").write_bytes(good[:1000])
    os.utime(folder / "guitar.instrument", ns=(1, 1))
    assert lib.scan(settle=False).refused
    assert lib.entries["guitar"].version == 1 and lib.entries["guitar"].instrument is not None
    assert not lib.scan(settle=False).refused, "the same bad file is not refused again and again"
    (folder / "guitar.instrument").write_bytes(good)
    os.utime(folder / "guitar.instrument", ns=(2, 2))
    assert [e.name for e in lib.scan(settle=False).replaced] == ["guitar"]
    assert lib.entries["guitar"].version == 2


def test_a_file_still_being_written_is_read_only_once_it_settles(folder):
    good = BUNDLED.read_bytes()
    target = folder / "piano.instrument"
    lib2 = Library(folder)
    lib2.scan(settle=False)
    target.write_bytes(good[:5000])
    first = lib2.scan()  # just appeared / changed: not read yet
    assert not first.added and not first.refused
    target.write_bytes(good)  # the copy finishes
    os.utime(target, ns=(10, 10))
    assert not lib2.scan().added, "changed since the last poll: wait"
    assert [e.name for e in lib2.scan().added] == ["piano"], "unchanged for one poll: read"
