"""The trainer's commands in-process: help, refusals before anything is sent, endpoints, no trainer."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from sensorsynth.cli import main
from sensorsynth.trainer.client import TrainerClient, TrainerUnavailable
from sensorsynth.cli.trainer import _clip_name, _pub_endpoint
from sensorsynth.trainer.local import default_threads, local_endpoint

from .helpers import GUITAR
from .procs import free_port


@pytest.mark.parametrize(
    "command, words",
    [
        (["trainer"], ["--bind", "--pub", "--db", "--models", "--workers", "--threads", "--device", "--ray",
                       "--heartbeat-s", "--liveness", "--max-losses", "--max-audio-mb", "--ready-file"]),
        (["worker"], ["--connect", "--device", "--threads", "--machine", "--heartbeat-s", "--liveness"]),
        (["submit"], ["CLIP", "--name", "--wait", "--output", "--replace", "--steps", "--set", "--spec", "--timeout"]),
        (["jobs"], ["--limit", "--state", "--json"]),
        (["cancel"], ["JOB", "--connect", "--keys"]),
        (["fetch"], ["JOB", "--output", "--keys"]),
        (["trainer", "keys"], ["init", "list", "add-worker", "add-client", "add-admin", "remove", "new"]),
    ],
)
def test_help(command: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out, word


def test_submit_refuses_before_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"
    cases = [
        (["submit", str(tmp_path / "none.wav")], "none.wav: no such file"),
        (["submit", str(GUITAR), "--name", "a..b"], "--name 'a..b'"),
        (["submit", str(GUITAR), "--set", "steps=0"], "bad settings: steps"),
        (["submit", str(GUITAR), "--spec", "n_resonances=0"], "bad spec: n_resonances"),
        (["submit", str(GUITAR), "--connect", "http://x"], "not a ZeroMQ endpoint"),
        (["cancel", "zz"], "is not a full job id"),
        (["cancel", "abcd1234"], "is not a full job id"),  # a prefix is not enough any more
        (["fetch", "abcd1234", "-o", str(tmp_path / "x.instrument")], "is not a full job id"),
    ]
    for args, words in cases:
        start = time.monotonic()
        assert main([*args, "--connect", nobody] if "--connect" not in args else args) == 2, args
        assert words in capsys.readouterr().err, args
        assert time.monotonic() - start < 5  # nothing waited for a trainer


def test_trainer_refuses_a_busy_port_and_a_bad_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["trainer", "--workers", "0", "--bind", f"tcp://127.0.0.1:{port}", "--db",
                     str(tmp_path / "q.db")]) == 2
        assert "cannot listen on" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    assert main(["trainer", "--workers", "0", "--db", str(tmp_path / "junk.db")]) == 2
    assert "junk.db: cannot open the queue database" in capsys.readouterr().err


def test_a_client_gives_up_when_nothing_answers() -> None:
    start = time.monotonic()
    with pytest.raises(TrainerUnavailable, match="no answer from the trainer"):
        with TrainerClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.2, retries=2) as client:
            client.list()
    assert time.monotonic() - start < 3


def test_endpoints_and_defaults() -> None:
    assert local_endpoint("tcp://*:5555") == "tcp://127.0.0.1:5555"
    assert local_endpoint("tcp://0.0.0.0:7") == "tcp://127.0.0.1:7"
    assert local_endpoint("tcp://10.0.0.2:5555") == "tcp://10.0.0.2:5555"
    assert _pub_endpoint("tcp://*:5555", None) == "tcp://*:5556"
    assert _pub_endpoint("tcp://*:5555", "none") is None
    assert _pub_endpoint("tcp://*:5555", "tcp://*:9") == "tcp://*:9"
    assert default_threads(1, 16) == 16 and default_threads(3, 16) == 5 and default_threads(4, 2) == 1
    assert _clip_name(Path("My Take (2).wav")) == "My-Take-2" and _clip_name(Path("-.wav")) == "clip"


def test_the_trainer_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    for extra in ([], ["--keys", "none"]):
        assert main(["trainer", "--workers", "0", "--bind", f"tcp://0.0.0.0:{port}", "--db", str(tmp_path / "q.db"),
                     *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "beyond this machine, without keys" in err and "keys init" in err
    # the PUB socket counts too: a loopback queue announcing on every interface
    assert main(["trainer", "--workers", "0", "--bind", f"tcp://127.0.0.1:{port}", "--pub", f"tcp://*:{port + 1}",
                 "--db", str(tmp_path / "q.db")]) == 2
    assert "tcp://*:" in capsys.readouterr().err


def test_loopback_is_what_only_this_machine_reaches() -> None:
    from sensorsynth.trainer.keys import is_loopback

    for inside in ("tcp://127.0.0.1:5555", "tcp://127.1.2.3:1", "tcp://localhost:5555", "tcp://[::1]:5555",
                   "ipc:///tmp/q", "inproc://q"):
        assert is_loopback(inside), inside
    for outside in ("tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://[::]:5555", "tcp://192.168.1.2:5555",
                    "tcp://eth0:5555", "tcp://127.0.0.1.evil.example:5555"):
        assert not is_loopback(outside), outside


def test_compose_keeps_the_trainer_off_the_network() -> None:
    """deploy/compose.yaml: the trainer's port is published on 127.0.0.1 only, and it always runs with keys
    (it binds every interface of its container, which the trainer refuses without them). Read as text: the
    service's own lines, without a YAML library the project does not otherwise need."""
    import re

    from .procs import REPO

    text = (REPO / "deploy" / "compose.yaml").read_text()
    block = re.search(r"^  trainer:\n((?:    .*\n|\s*#.*\n|\s*\n)+)", text, re.MULTILINE)
    assert block is not None
    lines = [line for line in block.group(1).splitlines() if not line.strip().startswith("#")]
    body = "\n".join(lines)
    ports = re.findall(r'"([^"]*:\d+/tcp)"', "".join(line for line in lines if "ports:" in line))
    assert ports, body
    for port in ports:
        assert port.count(":") == 2 and port.startswith("127.0.0.1:"), port
    assert re.search(r'"--keys", "(?!none")[^"]+"', body), body
