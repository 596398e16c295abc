"""atomic_write: the file appears whole or not at all, leaves no temporary file, and can refuse to overwrite."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from sensorsynth.atomic import atomic_write


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_bytes_text_and_a_writer_land_whole(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01" * 1000) == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01" * 1000
    atomic_write(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write(tmp_path / "w.dat", lambda tmp: Path(tmp).write_bytes(b"from a writer"))
    assert (tmp_path / "w.dat").read_bytes() == b"from a writer"
    atomic_write(tmp_path / "a.bin", b"new")  # replaces by default
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half of the new con")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_no_clobber_refuses_an_existing_name_and_cleans_up(tmp_path):
    target = tmp_path / "take.instrument"
    atomic_write(target, b"first", clobber=False)
    with pytest.raises(FileExistsError):
        atomic_write(target, b"second", clobber=False)
    assert target.read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def test_modes_secret_and_default(tmp_path):
    atomic_write(tmp_path / "key.pem", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "shared", lambda tmp: os.chmod(tmp, 0o600))  # a writer's own mode is overridden
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644


def test_concurrent_writers_never_show_a_mixed_file(tmp_path):
    """Eight threads rewrite one name 50 times each while a reader reads it: every read is one writer's whole
    content (a fixed temporary name shared by writers would fail this)."""
    target = tmp_path / "ready.json"
    atomic_write(target, b"0" * 4096)
    bad: list[bytes] = []
    done = threading.Event()

    def writer(i: int) -> None:
        for _ in range(50):
            atomic_write(target, str(i).encode() * 4096, durable=False)

    def reader() -> None:
        while not done.is_set():
            data = target.read_bytes()
            if len(set(data)) != 1 or len(data) != 4096:
                bad.append(data[:16])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    r.join()
    assert bad == []
    assert leftovers(tmp_path) == []
