"""The documentation cannot rot: the site builds strictly, its generated tables equal what the code generates,
and the hand-written protocol reference names everything the code and a running server send.

- ``mkdocs build --strict`` (mkdocs.yml: every nav entry, link and anchor must resolve; no page left out of
  the nav), plus the README's links into docs/ (files and anchors, against the built site);
- ``docs/gen_reference.py --check``: the serve options, WebSocket and trainer messages, fit settings, model
  sizes and every command's ``--help`` in the pages equal what the script makes from the code now;
- docs/protocol.md against the code: every OSC address it lists routes (``parse_address``) and every verb the
  router knows is listed; every error code the code can send or count is in the error table; every message
  type the server pushes is in the server → client table;
- docs/protocol.md against a real ``sensorsynth serve`` (null output, free ports on 127.0.0.1): every field of
  its status (``/health``), ``welcome``, ready file and instrument API is named in its section.

Marked ``docs`` so that ``-m "not docs"`` leaves them out.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PROTOCOL = DOCS / "protocol.md"


def _env() -> dict[str, str]:
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def section(text: str, heading: str) -> str:
    """The text under the first heading that starts with ``heading``, up to the next heading of its level or
    higher."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#+) (.*)", line)
        if m and m.group(2).startswith(heading):
            level = len(m.group(1))
            end = next((j for j in range(i + 1, len(lines))
                        if (h := re.match(r"^(#+) ", lines[j])) and len(h.group(1)) <= level), len(lines))
            return "\n".join(lines[i:end])
    raise AssertionError(f"docs/protocol.md has no section {heading!r}")


def named(text: str) -> set[str]:
    """Every name written as code in ``text`` (`name`), and every word inside code spans."""
    spans = re.findall(r"`([^`]+)`", text)
    return set(spans) | {w for s in spans for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", s)}


# ------------------------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_the_site_builds_strictly_with_every_page_in_it(site):
    pages = {p.relative_to(DOCS).with_suffix(".html").as_posix() for p in DOCS.rglob("*.md")}
    built = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"


def test_the_readme_links_into_the_docs_resolve(site):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert any(link.startswith("docs/") for link in links), "the README links into docs/"
    broken = []
    for link in links:
        if re.match(r"^[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        if not (REPO / path).exists():
            broken.append(f"{link}: no file {path}")
            continue
        if anchor and path.startswith("docs/") and path.endswith(".md"):
            html = (site / Path(path).relative_to("docs").with_suffix(".html")).read_text(encoding="utf-8")
            if f'id="{anchor}"' not in html:
                broken.append(f"{link}: no anchor #{anchor}")
    assert not broken, "broken README links:\n" + "\n".join(broken)


def test_the_readme_starts_with_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"the README is {len(lines)} lines; details belong in docs/"
    commands = [line.strip() for line in lines[:6] if line.strip().startswith("python3 -m venv")]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . && sensorsynth serve",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e '.[test]' "
        "&& python -m pytest -q",
    ]


@pytest.mark.slow
def test_the_generated_tables_match_the_code():
    proc = subprocess.run([sys.executable, str(DOCS / "gen_reference.py"), "--check"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------- protocol vs code


def _osc_router():
    """The OSC address router, wherever the code keeps it."""
    for module in ("sensorsynth.server.osc", "sensorsynth.protocol.osc"):
        try:
            mod = __import__(module, fromlist=["parse_address"])
        except ImportError:
            continue
        if hasattr(mod, "parse_address"):
            return mod
    raise AssertionError("no parse_address in sensorsynth.server.osc or sensorsynth.protocol.osc")


def _documented_osc_addresses() -> list[str]:
    table = section(PROTOCOL.read_text(encoding="utf-8"), "OSC")
    out = []
    for row in re.findall(r"(?m)^\| (.*?) \|", table):
        for addr in re.findall(r"`(/sensorsynth/[^`]*)`", row):
            out.append(addr)
    return out


def test_every_documented_osc_address_routes():
    osc = _osc_router()
    addresses = _documented_osc_addresses()
    assert len(addresses) >= 15
    refused = []
    for addr in addresses:
        if "..." in addr:
            continue
        concrete = addr.replace("<i>", "3").replace("<n>", "1").replace("<source>", "td")
        route = osc.parse_address(concrete.encode())
        if type(route).__name__ == "Rejection":
            refused.append(f"{addr}: {route}")
    assert not refused, "documented OSC addresses the router refuses:\n" + "\n".join(refused)


def test_every_osc_verb_the_router_knows_is_documented():
    osc = _osc_router()
    documented = set(_documented_osc_addresses())
    verbs = set(getattr(osc, "_VERBS_NO_INDEX", ())) | {"status"}
    missing = [f"/sensorsynth/{v}" for v in sorted(verbs) if f"/sensorsynth/{v}" not in documented]
    missing += [f"/sensorsynth/learn/{a}" for a in getattr(osc, "LEARN_ACTIONS", ())
                if f"/sensorsynth/learn/{a}" not in documented]
    for kind in ("motion", "hand", "raw"):
        if f"/sensorsynth/input/<source>/{kind}" not in documented:
            missing.append(f"/sensorsynth/input/<source>/{kind}")
    assert not missing, f"OSC addresses the router takes but docs/protocol.md does not list: {missing}"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            yield (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)), node


def _code_errors() -> dict[str, set[str]]:
    """Error codes and refusal kinds the code can send or count: the literal code argument of
    ``Rejected``/``Rejection``/``WireError``/``UploadError``/``error``, of a client ``_error``/``_send_error``,
    of ``Rejections.count``, and ``code=`` keywords."""
    position = {"Rejected": 0, "Rejection": 0, "WireError": 0, "UploadError": 0, "error": 0,
                "_error": 1, "_send_error": 1, "count": 1}
    found: dict[str, set[str]] = {}
    for path in (REPO / "sensorsynth").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, call in _calls(tree):
            values = []
            if name in position and len(call.args) > position[name]:
                values.append(call.args[position[name]])
            values += [k.value for k in call.keywords if k.arg == "code"]
            for v in values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str) and re.fullmatch(r"[a-z][a-z_]*", v.value):
                    found.setdefault(v.value, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_error_code_in_the_code_is_documented():
    codes = _code_errors()
    assert {"bad_json", "bad_schema", "wrong_count", "malformed", "no_voice"} <= set(codes), \
        f"the scan finds the codes it should: {sorted(codes)}"
    table = section(PROTOCOL.read_text(encoding="utf-8"), "Error codes")
    missing = {c: sorted(where) for c, where in codes.items() if c not in named(table)}
    assert not missing, f"error codes the code sends but docs/protocol.md's error table lacks: {missing}"


def test_every_message_type_the_server_pushes_is_documented():
    pushed: set[str] = set()
    for path in [*(REPO / "sensorsynth" / "server").rglob("*.py"), REPO / "sensorsynth" / "protocol" / "ws.py"]:
        for name, call in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            if name == "encode" and call.args and isinstance(call.args[0], ast.Constant) \
                    and re.fullmatch(r"[a-z][a-z_]*", str(call.args[0].value)):  # not str.encode("utf-8")
                pushed.add(call.args[0].value)
    assert {"welcome", "status", "meter"} <= pushed, f"the scan finds the pushes it should: {sorted(pushed)}"
    table = section(PROTOCOL.read_text(encoding="utf-8"), "Server → client")
    rows = set(re.findall(r"(?m)^\| `([a-z_]+)` \|", table))
    assert not pushed - rows, f"pushed but not in docs/protocol.md's server → client table: {sorted(pushed - rows)}"


# --------------------------------------------------------------------------------- protocol vs a server


def _keys(value, skip=("rejected", "learned", "instruments")) -> set[str]:
    """Every key of a JSON value, nested ones included, except under keys whose children are data
    (``rejected`` by source:kind, ``learned`` per instrument)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            if k not in skip:
                out |= _keys(v, skip)
    elif isinstance(value, list):
        for v in value:
            out |= _keys(v, skip)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    ready = tmp / "ready.json"
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensorsynth", "serve", str(REPO / "models"), "--output", "null", "--host",
         "127.0.0.1", "--osc-port", "0", "--ws-port", "0", "--ready-file", str(ready)],
        cwd=tmp, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240  # the first start on a machine compiles the audio kernel
        while not ready.exists():
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not get ready"
            time.sleep(0.2)
        yield json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_every_status_and_ready_file_field_a_server_reports_is_documented(server):
    text = section(PROTOCOL.read_text(encoding="utf-8"), "Status fields")
    status = _get(server["ws_port"], "/health")
    missing = sorted(_keys(status) - named(text))
    assert not missing, f"status fields a running server reports but docs/protocol.md does not name: {missing}"
    missing = sorted(set(server) - named(text))
    assert not missing, f"ready file fields not named in docs/protocol.md: {missing}"


def test_every_instrument_api_field_is_documented(server):
    text = section(PROTOCOL.read_text(encoding="utf-8"), "HTTP")
    listing = _get(server["ws_port"], "/api/instruments")
    name = listing["instruments"][0]["name"]
    detail = _get(server["ws_port"], f"/api/instruments/{name}")
    missing = sorted((_keys(listing) | _keys(detail, skip=())) - named(text))
    assert not missing, f"instrument API fields not named in docs/protocol.md: {missing}"


def test_every_welcome_field_is_documented(server):
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server['ws_port']}/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "hello", "client": "docs test"}))
        welcome = json.loads(ws.recv(timeout=10))
    assert welcome["type"] == "welcome"
    text = section(PROTOCOL.read_text(encoding="utf-8"), "Server → client")
    missing = sorted(_keys(welcome, skip=()) - named(text))
    assert not missing, f"welcome fields a running server sends but docs/protocol.md does not name: {missing}"
