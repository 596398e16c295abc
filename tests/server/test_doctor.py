"""``sensorsynth doctor``: what it says about good and broken set-ups (real files, real ports, a real server)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from .conftest import BUNDLED, REPO

pytestmark = pytest.mark.slow  # doctor as a real process


def doctor(*args: str, stdout_only: bool = False) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "doctor", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    return r.returncode, r.stdout if stdout_only else r.stdout + r.stderr


def test_a_good_setup_passes(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(BUNDLED, models / "guitar.instrument")
    code, out = doctor(str(models), "--host", "127.0.0.1", "--osc-port", "0", "--ws-port", "0", "--output", "null")
    assert code == 0, out
    assert "1 instrument(s): guitar" in out and "FAIL" not in out


def test_broken_models_and_busy_port_are_named_with_a_fix(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.instrument").write_bytes(b"\x00" * 100)
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        code, out = doctor(str(models), "--host", "127.0.0.1", "--osc-port", str(port), "--ws-port", "0",
                           "--output", "null", "--json", stdout_only=True)
    finally:
        busy.close()
    assert code == 1
    checks = json.loads(out)
    fails = [c for c in checks if c["status"] == "FAIL"]
    assert any(c["area"] == "models" and "broken.instrument" in c["message"] for c in fails), fails
    assert any(c["area"] == "models" and "no usable instruments" in c["message"] and c["fix"] for c in fails)
    assert any(c["area"] == "ports" and str(port) in c["message"] and "in use" in c["message"] for c in fails)


def test_a_running_server_is_recognised(start_server):
    server = start_server(record=False)
    code, out = doctor(str(server.models), "--host", "127.0.0.1", "--osc-port", "0", "--ws-port",
                       str(server.ws_port), "--output", "null")
    assert code == 0, out
    assert "already runs" in out
    assert server.stop() == 0


def test_the_kernel_preemption_model_is_read_from_the_best_source():
    from sensorsynth.server.doctor import preemption_model

    built_none = "CONFIG_PREEMPT_NONE=y\n# CONFIG_PREEMPT is not set\nCONFIG_PREEMPT_DYNAMIC=y\n"
    assert preemption_model(None, "console=ttyS0", built_none) == "none"
    assert preemption_model(None, "ro preempt=full quiet", built_none) == "full"  # the boot parameter wins
    assert preemption_model("none voluntary (full) lazy\n", "preempt=none", built_none) == "full"  # the live one
    assert preemption_model(None, "", "CONFIG_PREEMPT_RT=y\nCONFIG_PREEMPT=y\n") == "rt"
    assert preemption_model(None, "", "CONFIG_PREEMPT_VOLUNTARY=y\n") == "voluntary"
    assert preemption_model(None, "", None) is None


def test_doctor_names_this_machines_kernel_preemption():
    from sensorsynth.server.doctor import check_kernel

    (check,) = list(check_kernel())
    assert check.area == "kernel" and check.status in ("ok", "warn")
    if check.status == "warn":
        assert "preempt=full" in check.fix and "cyclictest" in check.fix


def test_the_scenes_file_is_checked_as_serve_would(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(BUNDLED, models / "guitar.instrument")
    config = tmp_path / "serve.toml"  # the museum's scenes play TouchDesigner's preset: the server must load it
    config.write_text(f'presets = ["touchdesigner"]\noutput_channels = 8\nscenes = "{REPO / "deploy" / "scenes.toml"}"\n')
    args = (str(models), "--host", "127.0.0.1", "--osc-port", "0", "--ws-port", "0", "--output", "null", "--json")
    code, out = doctor(*args, "--config", str(config), stdout_only=True)
    scenes = [c for c in json.loads(out) if c["area"] == "scenes"]
    assert code == 0 and len(scenes) == 1 and scenes[0]["status"] == "ok", out
    assert scenes[0]["message"].startswith("3 scenes; now ") and " next " in scenes[0]["message"]
    bad = tmp_path / "scenes.toml"
    bad.write_text('[scenes.day]\ninstrument = "cello"\n')
    code, out = doctor(*args, "--scenes", str(bad), stdout_only=True)
    scenes = [c for c in json.loads(out) if c["area"] == "scenes"]
    assert code == 1 and scenes[0]["status"] == "FAIL" and "no instrument 'cello'" in scenes[0]["message"], out
    assert "scenes check" in scenes[0]["fix"]
