"""deploy/: the systemd units pass systemd-analyze, the example config documents every option and runs."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sensorsynth.server.config import ServeConfig, load_config
from tests.server.conftest import launch

pytestmark = pytest.mark.slow  # the deployment's files and servers


REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ["sensorsynth.service", "sensorsynth-trainer.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify(unit, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    exe = Path(sys.executable).parent / "sensorsynth"
    assert exe.exists(), "the console script is installed beside this Python"
    text = (DEPLOY / "systemd" / unit).read_text()
    for key in ("Restart=", "User=sensorsynth", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                "StandardOutput=journal"):
        assert key in text, f"{unit} lacks {key}"
    if unit == "sensorsynth.service":
        for key in ("Type=notify", "WatchdogSec=", "DevicePolicy=closed", "DeviceAllow=char-alsa"):
            assert key in text
    (tmp_path / unit).write_text(text.replace("/opt/sensorsynth/.venv/bin/sensorsynth", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_the_example_config_documents_every_option():
    text = (DEPLOY / "sensorsynth.toml").read_text()
    keys = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.M))
    missing = sorted(set(ServeConfig.model_fields) - keys)
    assert not missing, f"deploy/sensorsynth.toml does not mention {missing}"
    config = load_config(DEPLOY / "sensorsynth.toml")
    assert config.ws_token and config.osc_allowed_senders and config.host == "0.0.0.0"


def test_install_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_example_config_runs_and_reports_health(tmp_path):
    """The real server from the example config (paths and ports moved into the test's folder)."""
    cfg = (DEPLOY / "sensorsynth.toml").read_text()
    cfg = cfg.replace("/var/lib/sensorsynth", str(tmp_path)).replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
    cfg = re.sub(r"^osc_allowed_senders = .*$", 'osc_allowed_senders = ["127.0.0.1"]', cfg, flags=re.M)
    cfg = re.sub(r"^hostapi = .*$", "", cfg, flags=re.M)
    (tmp_path / "models").mkdir()
    shutil.copy(REPO / "models" / "guitar.instrument", tmp_path / "models")
    (tmp_path / "sensorsynth.toml").write_text(cfg)
    server = launch(tmp_path, "--config", str(tmp_path / "sensorsynth.toml"), models=tmp_path / "models")
    try:
        assert "https://" in server.output() and "token=" in server.output()
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        ctx.check_hostname = False
        with urllib.request.urlopen(f"https://127.0.0.1:{server.ws_port}/health", context=ctx, timeout=10) as r:
            health = json.loads(r.read())
        for key in ("uptime_s", "level", "underruns", "clients", "instrument", "cpu_load", "rejected", "events"):
            assert key in health
        assert health["instrument"] == "guitar" and health["running"] is True
        from pythonosc.osc_message import OscMessage
        from pythonosc.osc_message_builder import OscMessageBuilder

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sock.sendto(OscMessageBuilder("/sensorsynth/status").build().dgram, ("127.0.0.1", server.osc_port))
        status = OscMessage(sock.recvfrom(65536)[0]).params
        sock.close()
        assert "underruns" in status and "instrument" in status
        import time

        time.sleep(1.0)
    finally:
        code = server.stop()
    assert code == 0
    import soundfile as sf

    assert sf.info(str(server.record_path)).duration > 0.5, "SIGTERM leaves a valid recording"
