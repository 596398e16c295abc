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
    assert config.ws_token is None, "no usable token ships: install.sh makes one per box"
    assert config.osc_allowed_senders and config.host == "0.0.0.0"


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


# ----------------------------------------------------------------------------- hardening (issue 19)


def _directives(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (a key may repeat)."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / unit).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _offline_security(path: Path) -> tuple[float, str]:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)], capture_output=True,
                       text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    if r.returncode not in (0, 1) or match is None:
        if "--offline" in r.stderr or "unrecognized option" in r.stderr:
            pytest.skip(f"this systemd-analyze has no --offline ({r.stderr.strip()[:80]})")
        raise AssertionError(r.stdout + r.stderr)
    return float(match.group(1)), r.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_both_units_rate_ok_with_systemd_analyze_security(unit, tmp_path):
    """``systemd-analyze security --offline=yes`` ≤ 3.0 (OK) for both units (5.6 and 5.1, MEDIUM, before)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    score, report = _offline_security(DEPLOY / "systemd" / unit)
    assert score <= 3.0, report
    assert "OK" in report.strip().splitlines()[-1]


def test_server_and_trainer_are_separate_users_with_separate_state():
    server, trainer = _directives("sensorsynth.service"), _directives("sensorsynth-trainer.service")
    assert server["User"] == ["sensorsynth"] and trainer["User"] == ["sensorsynth-trainer"]
    assert server["StateDirectory"] == ["sensorsynth"] and trainer["StateDirectory"] == ["sensorsynth-trainer"]
    numba = {u: next(v.split("=", 1)[1] for v in d["Environment"] if v.startswith("NUMBA_CACHE_DIR="))
             for u, d in (("server", server), ("trainer", trainer))}
    assert numba["server"].startswith("/var/lib/sensorsynth/") and numba["trainer"].startswith(
        "/var/lib/sensorsynth-trainer/"), numba
    # the trainer delivers into a folder the server only reads
    models = "/var/lib/sensorsynth-models"
    assert f"--models {models}" in trainer["ExecStart"][0] and f"serve {models} " in server["ExecStart"][0]
    assert models in trainer["ReadWritePaths"] and models in server["ReadOnlyPaths"]
    assert not any(models in p or p == "/var/lib" for p in server.get("ReadWritePaths", []))
    assert "/var/lib/sensorsynth-trainer" not in " ".join(server.get("ReadWritePaths", []))
    assert "/var/lib/sensorsynth" not in " ".join(trainer.get("ReadWritePaths", [])).replace(models, "")
    assert "--db /var/lib/sensorsynth-trainer/" in trainer["ExecStart"][0]


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_is_confined(unit):
    d = _directives(unit)
    for key, value in (("CapabilityBoundingSet", ""), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("ProtectProc", "invisible"),
                       ("SystemCallArchitectures", "native"), ("LockPersonality", "yes"), ("RestrictNamespaces", "yes"),
                       ("UMask", "0027")):  # fmt: skip
        assert d.get(key) == [value], f"{unit}: {key}={d.get(key)}"
    assert d["SystemCallFilter"][0] == "@system-service" and d["SystemCallErrorNumber"] == ["EPERM"]
    assert d["MemoryMax"] and d["TasksMax"] and d["RestrictAddressFamilies"]
    # numba (server) and torch's oneDNN (trainer) generate code at run time: W+X pages must stay allowed
    assert d.get("MemoryDenyWriteExecute", ["no"]) == ["no"]
    if unit == "sensorsynth.service":
        assert "PrivateDevices" not in d and d["DeviceAllow"] == ["char-alsa rw"] and d["DevicePolicy"] == ["closed"]
        assert d["LimitRTPRIO"] == ["20"] and d.get("RestrictRealtime", ["no"]) == ["no"]  # realtime by rlimit
        assert d.get("AmbientCapabilities") == [""]
    else:
        assert d["PrivateDevices"] == ["yes"] and d["RestrictRealtime"] == ["yes"] and d["ProcSubset"] == ["pid"]
        assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == ["localhost"]


def test_install_script_makes_two_users_and_a_models_folder_only_the_trainer_writes():
    text = (DEPLOY / "install.sh").read_text()
    assert "useradd --system" in text and "sensorsynth-trainer" in text
    assert re.search(r'install -d -m 2750 -o sensorsynth-trainer -g sensorsynth "\$MODELS"', text)
    assert 'chgrp sensorsynth "$CONF/sensorsynth.toml" && chmod 0640' in text  # the token: not the trainer's
    docker = (DEPLOY / "Dockerfile").read_text()
    assert "sensorsynth-trainer" in docker and "install -d -m 2750 -o sensorsynth-trainer -g sensorsynth" in docker
    assert "cap-add SYS_NICE" not in docker
