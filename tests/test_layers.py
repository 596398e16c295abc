"""The layers hold: import-linter's contracts (``.importlinter``) on the whole package, and a player installed
without torch (``pip install sensorsynth``, no extras) really plays.

The second part runs real processes in which torch cannot be imported: a ``sitecustomize`` module, first on
``PYTHONPATH``, puts a finder on ``sys.meta_path`` that refuses ``torch`` (as if it were not installed). Then
the playing side imports, ``sensorsynth serve --output null`` starts and plays an OSC control into its
recording, and the commands that fit answer with one line naming the extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.udp_client import SimpleUDPClient

REPO = Path(__file__).resolve().parents[1]
GUITAR = REPO / "models" / "guitar.instrument"
HINT = "pip install 'sensorsynth[fit]'"

NO_TORCH = '''
import sys


class _NoTorch:
    """As if torch were not installed: every import of it fails the way a missing package does."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''


def test_the_import_contracts_hold() -> None:
    """Every contract in .importlinter is kept (the output names the broken import chains otherwise)."""
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command(['--config', '.importlinter', '--no-cache']))"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout, r.stdout[-4000:]


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process without torch (the blocker first on the path, this tree after it)."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(NO_TORCH)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "PYTHONUNBUFFERED": "1"}


def _python(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)


def test_the_blocker_blocks(no_torch: dict[str, str]) -> None:
    r = _python(no_torch, "-c", "import torch")
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, r.stderr


def test_the_playing_side_imports_without_torch(no_torch: dict[str, str]) -> None:
    code = (
        "import sensorsynth.cli, sensorsynth.server.app, sensorsynth.server.engine, sensorsynth.server.web\n"
        "import sensorsynth.render.renderer, sensorsynth.render.performance, sensorsynth.mapping.hub\n"
        "import sensorsynth.protocol.ws, sensorsynth.protocol.trainer, sensorsynth.trainer.client\n"
        "import sensorsynth.instrument.settings, sensorsynth.instrument_file, sensorsynth.audio\n"
        "sensorsynth.cli.build_parser()\n"
        "print('ok')\n"
    )
    r = _python(no_torch, "-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("command", [
    ["fit", str(REPO / "missing.wav")],
    ["worker"],
    ["trainer", "--workers", "1"],
    ["serve", "--device", "torch:cpu", "--output", "null"],  # the batched torch renderer (cuda is numba-cuda)
])
def test_what_needs_torch_names_the_extra_in_one_line(no_torch: dict[str, str], command: list[str]) -> None:
    r = _python(no_torch, "-m", "sensorsynth", *command, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and HINT in lines[0], r.stderr


@pytest.mark.slow
def test_info_and_render_work_without_torch(no_torch: dict[str, str], tmp_path: Path) -> None:
    r = _python(no_torch, "-m", "sensorsynth", "info", str(GUITAR), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spec"]["control_plane_dim"] > 0
    out = tmp_path / "r.wav"
    r = _python(no_torch, "-m", "sensorsynth", "render", str(GUITAR), "--random", "--seconds", "0.5", "-o", str(out),
                "--seed", "1")
    assert r.returncode == 0, r.stderr
    audio, _ = sf.read(str(out))
    assert audio.size > 0 and np.any(audio != 0)


@pytest.mark.slow
def test_serve_plays_without_torch(no_torch: dict[str, str], tmp_path: Path) -> None:
    """`pip install sensorsynth` with no extras: the server starts on the null output and an OSC control
    plays into its recording."""
    ready, record, log_path = tmp_path / "ready.json", tmp_path / "rec.wav", tmp_path / "serve.log"
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(GUITAR, models / GUITAR.name)
    cmd = [sys.executable, "-m", "sensorsynth", "serve", str(models), "--output", "null", "--host", "127.0.0.1",
           "--osc-port", "0", "--ws-port", "0", "--ready-file", str(ready), "--record", str(record)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=no_torch)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "not ready within 180 s:\n" + log_path.read_text()
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        time.sleep(0.5)
        SimpleUDPClient("127.0.0.1", info["osc_port"]).send_message("/sensorsynth/control", [1.0] * 16)
        time.sleep(1.0)
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, log_path.read_text()
    assert "sensorsynth serve: playing" in log_path.read_text()
    audio, rate = sf.read(str(record), dtype="float32")
    assert float(np.max(np.abs(audio))) > 0.01, "the control played nothing"


def test_the_hands_adapter_starts_without_torch(no_torch: dict[str, str]) -> None:
    """The webcam adapter's wire side (arguments, replaying recorded frames) needs neither torch nor the fit extra."""
    r = _python(no_torch, str(REPO / "adapters" / "hands" / "sensorsynth_hands.py"), "--help", timeout=60)
    assert r.returncode == 0 and "--replay" in r.stdout, r.stderr
