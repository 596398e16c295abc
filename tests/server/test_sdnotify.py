"""systemd's notify protocol (server/sdnotify.py) against a real datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket

from sensorsynth.server.sdnotify import Notifier


def listener(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


def test_messages_reach_the_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = listener(path)
    try:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_interval == 1.5
        assert n.ready("playing guitar") and n.watchdog() and n.status("2 clients") and n.stopping()
        got = [sock.recv(4096).decode() for _ in range(4)]
        n.close()
    finally:
        sock.close()
    assert got == ["READY=1\nSTATUS=playing guitar", "WATCHDOG=1", "STATUS=2 clients", "STOPPING=1"]


def test_the_abstract_namespace_and_outside_systemd(tmp_path):
    name = f"sensorsynth-test-{os.getpid()}"
    sock = listener("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready() and sock.recv(64) == b"READY=1"
        n.close()
    finally:
        sock.close()
    outside = Notifier({})
    assert not outside.enabled and outside.watchdog_interval is None and outside.ready() is False
    other = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None  # another process's watchdog
    assert other.send("WATCHDOG=1") is False  # nobody listening: a quiet False, never an exception
