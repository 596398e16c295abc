"""TLS: the self-signed certificate (made once, reused, re-issued for a new address or near expiry, by the same
local CA), option errors, and a real ``sensorsynth serve --tls self-signed`` answering https and wss to a
client that trusts only the generated CA."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # certificates are made for real, and served by real servers


pytest.importorskip("cryptography", reason="the cryptography package is not installed")

from cryptography import x509  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from sensorsynth.server import tls  # noqa: E402

from .conftest import BUNDLED, REPO  # noqa: E402


def san(path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(a) for a in ext.get_values_for_type(x509.IPAddress)}


def permitted(ca_pem) -> tuple[set[str], set[str]]:
    """The DNS names and addresses the CA's (critical) name constraints permit."""
    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    ext = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical and ext.value.excluded_subtrees is None
    subtrees = ext.value.permitted_subtrees
    dns = {n.value for n in subtrees if isinstance(n, x509.DNSName)}
    nets = [n.value for n in subtrees if isinstance(n, x509.IPAddress)]
    assert all(net.prefixlen == net.max_prefixlen for net in nets), nets  # single addresses, no ranges
    assert len(dns) + len(nets) == len(subtrees)
    return dns, {str(net.network_address) for net in nets}


def client_context(ca_pem) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_pem))  # hostname checking on: the SAN must cover it
    return ctx


def test_self_signed_is_made_once_and_reused(tmp_path):
    made = tls.ensure_self_signed(tmp_path, names=["box", "box.local"], addresses=["192.168.1.20", "127.0.0.1"])
    assert made.created and not made.replaced_ca
    assert made.server_pem.stat().st_mode & 0o077 == 0, "the key file must be private"
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0
    dns, ips = san(made.server_pem)
    assert dns == {"box", "box.local"} and ips == {"192.168.1.20", "127.0.0.1"}
    cert = x509.load_pem_x509_certificate(made.server_pem.read_bytes())
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days <= 825, "iOS refuses server certificates valid for more than 825 days"
    ca = x509.load_pem_x509_certificate(made.ca_pem.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert "PRIVATE KEY" not in made.ca_pem.read_text(), "ca.pem is for phones: certificate only"

    before = made.server_pem.read_bytes()
    again = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])  # a subset: reused
    assert not again.created and again.server_pem.read_bytes() == before


def test_a_new_address_reissues_and_remints_the_ca_once_keeping_the_old_names(tmp_path):
    """The CA may only vouch for the names it permits (issue 19), so a new address needs a new CA; the old
    names are kept, so moving back and forth between two networks re-mints once, not every time."""
    first = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["192.168.1.20"])
    ca_before = first.ca_pem.read_bytes()
    moved = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["10.0.0.7"])
    assert moved.created and moved.replaced_ca, "the start-up message must tell phones to accept the new CA"
    assert moved.ca_pem.read_bytes() != ca_before
    assert san(moved.server_pem)[1] == {"10.0.0.7", "192.168.1.20"}
    assert permitted(moved.ca_pem) == ({"box"}, {"10.0.0.7", "192.168.1.20"})
    back = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["192.168.1.20"])
    assert not back.created and not back.replaced_ca and back.ca_pem.read_bytes() == moved.ca_pem.read_bytes()


def test_near_expiry_renews_and_a_broken_ca_is_replaced(tmp_path, monkeypatch):
    first = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    real_now = tls._now
    monkeypatch.setattr(tls, "_now", lambda: real_now() + dt.timedelta(days=tls.SERVER_DAYS - 10))
    renewed = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    assert renewed.created and not renewed.replaced_ca
    monkeypatch.setattr(tls, "_now", real_now)

    (tmp_path / "ca-key.pem").write_text("garbage")
    replaced = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    assert replaced.replaced_ca and replaced.created, "a server certificate from a lost CA must be re-issued"
    cert = x509.load_pem_x509_certificate(replaced.server_pem.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(replaced.ca_pem.read_bytes()))
    assert first.server_pem == replaced.server_pem


def test_local_names_include_loopback_and_the_hostname():
    names, addrs = tls.local_names()
    assert "localhost" in names and "127.0.0.1" in addrs
    assert all(not a.startswith("169.254.") for a in addrs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"key": "k.pem"}, "--tls-key needs --tls-cert"),
        ({"mode": "self-signed", "cert": "c.pem"}, "give one or the other"),
        ({"cert": "/nonexistent/c.pem"}, "no such file"),
    ],
)
def test_option_errors_name_the_problem(kwargs, message):
    with pytest.raises(tls.TlsError, match=message):
        tls.setup(**kwargs)


def test_a_certificate_without_its_key_is_refused(tmp_path):
    made = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    with pytest.raises(tls.TlsError, match="no PEM certificate and private key"):
        tls.server_context(made.ca_pem)
    other = tls.ensure_self_signed(tmp_path / "other", names=["box"], addresses=["127.0.0.1"])
    with pytest.raises(tls.TlsError, match="does not belong"):
        tls.server_context(made.ca_pem, other.server_pem)


def test_serve_refuses_a_bad_certificate_with_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "sensorsynth", "serve", str(BUNDLED), "--output", "null", "--osc-port", "0",
         "--ws-port", "0", "--tls-cert", str(tmp_path / "missing.pem")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"error: TLS certificate {tmp_path / 'missing.pem'}: no such file"], res.stderr


def test_serve_self_signed_answers_https_and_wss(start_server, tmp_path):
    folder = tmp_path / "tls"
    server = start_server("--tls", "self-signed", "--tls-dir", str(folder), record=False)
    out = server.output()
    assert f"phone: https://127.0.0.1:{server.ws_port}/phone" in out, out
    assert f"wss://127.0.0.1:{server.ws_port}/ws" in out
    assert "TLS: self-signed certificate (new" in out
    ctx = client_context(folder / "ca.pem")
    base = f"https://127.0.0.1:{server.ws_port}"

    with urllib.request.urlopen(f"{base}/phone", context=ctx, timeout=10) as res:
        page = res.read().decode()
        assert res.status == 200 and res.headers["Content-Type"].startswith("text/html")
    assert "/static/phone.js" in page
    with urllib.request.urlopen(f"{base}/static/phone.js", context=ctx, timeout=10) as res:
        assert res.headers["Content-Type"].startswith("text/javascript")

    with connect(f"wss://127.0.0.1:{server.ws_port}/ws", ssl=ctx, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "hello", "client": "tls test"}))
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome" and welcome["sample_rate"] == server.sample_rate
        ws.send(json.dumps({"type": "sensor", "source": "phone", "kind": "motion", "values": [0.0] * 9}))
        ws.send(json.dumps({"type": "status"}))
        status = json.loads(ws.recv(timeout=10))
        assert status["type"] == "status" and status["ws"]["sensor_frames"] == 1

    # A client that does not trust the local CA is refused: the certificate really is checked.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{base}/health", context=ssl.create_default_context(), timeout=10)
    assert server.stop() == 0

    # A restart reuses the certificate: a phone that accepted it once is not asked again.
    pem = (folder / "server.pem").read_bytes()
    again = start_server("--tls", "self-signed", "--tls-dir", str(folder), record=False)
    assert "TLS: self-signed certificate (reused" in again.output()
    assert (folder / "server.pem").read_bytes() == pem
    with urllib.request.urlopen(f"https://127.0.0.1:{again.ws_port}/health", context=ctx, timeout=10) as res:
        assert json.loads(res.read())["running"] is True
    assert again.stop() == 0

    # The same files given explicitly (--tls-cert with the key inside, and with a separate key).
    given = start_server("--tls-cert", str(folder / "server.pem"), record=False)
    assert f"TLS: certificate {folder / 'server.pem'} for " in given.output()
    with urllib.request.urlopen(f"https://127.0.0.1:{given.ws_port}/phone", context=ctx, timeout=10) as res:
        assert res.status == 200
    assert given.stop() == 0


# ------------------------------------------------------------------------- a constrained CA (issue 19)


def _leaf(ca_key, ca_cert, dns: list[str], ips: list[str]):
    """A server certificate for any names, signed with the CA's key: what a thief of ca-key.pem would make."""
    return tls._make_server(ca_key, ca_cert, dns, ips)[1]


def _verify(ca_cert, leaf, name: str) -> None:
    """cryptography's own path validation (the web PKI profile, name constraints included)."""
    import ipaddress

    from cryptography.x509.verification import PolicyBuilder, Store

    try:
        subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    verifier = PolicyBuilder().store(Store([ca_cert])).build_server_verifier(subject)
    verifier.verify(leaf, [])


def test_the_ca_permits_exactly_the_boxs_names_and_is_short_lived(tmp_path):
    made = tls.ensure_self_signed(tmp_path, names=["box", "box.local", "localhost"],
                                  addresses=["192.168.1.20", "127.0.0.1", "::1"])
    assert permitted(made.ca_pem) == ({"box", "box.local", "localhost"}, {"192.168.1.20", "127.0.0.1", "::1"})
    assert permitted(made.ca_pem) == tuple(map(set, san(made.server_pem)))  # exactly what the server carries
    ca = x509.load_pem_x509_certificate(made.ca_pem.read_bytes())
    leaf = x509.load_pem_x509_certificate(made.server_pem.read_bytes())
    ca_days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    leaf_days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert ca_days <= 825 and leaf_days <= 397, (ca_days, leaf_days)
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    for name in ("box", "box.local", "localhost", "192.168.1.20", "127.0.0.1", "::1"):
        _verify(ca, leaf, name)


@pytest.mark.parametrize("dns, ips, asked", [
    (["www.example.com"], [], "www.example.com"),  # any public site
    (["box", "bank.example"], [], "bank.example"),  # one foreign name among the box's own
    ([], ["192.168.1.1"], "192.168.1.1"),  # the venue's router, next door on the LAN
    (["evil.box.example"], [], "evil.box.example"),
])
def test_a_leaf_for_another_name_made_with_the_cas_key_fails_verification(tmp_path, dns, ips, asked):
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.verification import VerificationError

    made = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["192.168.1.20"])
    pem = (tmp_path / "ca-key.pem").read_bytes()
    ca_key = serialization.load_pem_private_key(pem, password=None)
    ca = x509.load_pem_x509_certificate(made.ca_pem.read_bytes())
    forged = _leaf(ca_key, ca, dns, ips)
    with pytest.raises(VerificationError):
        _verify(ca, forged, asked)
    # the same forgery, checked by OpenSSL (what Python's ssl and most clients use)
    import shutil

    if shutil.which("openssl"):
        leaf_path = tmp_path / "forged.pem"
        leaf_path.write_bytes(tls._cert_pem(forged))
        r = subprocess.run(["openssl", "verify", "-CAfile", str(made.ca_pem), str(leaf_path)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and "subtree violation" in r.stdout + r.stderr, r.stdout + r.stderr
        good = subprocess.run(["openssl", "verify", "-CAfile", str(made.ca_pem), str(made.server_pem)],
                              capture_output=True, text=True, timeout=30)
        assert good.returncode == 0, good.stdout + good.stderr


def test_an_unconstrained_ca_from_an_earlier_version_is_replaced(tmp_path):
    """A CA made before name constraints (ten years, signs for anything) is replaced on the next start."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old sensorsynth local CA")])
    now = tls._now()
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now)
           .not_valid_after(now + dt.timedelta(days=3650))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "ca-key.pem").write_bytes(tls._key_pem(key) + tls._cert_pem(old))
    made = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    assert made.replaced_ca and made.created
    assert permitted(made.ca_pem) == ({"box"}, {"127.0.0.1"})


def test_the_ca_is_reminted_before_a_server_certificate_could_outlive_it(tmp_path, monkeypatch):
    first = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    ca_before = first.ca_pem.read_bytes()
    real_now = tls._now
    monkeypatch.setattr(tls, "_now", lambda: real_now() + dt.timedelta(days=tls.CA_DAYS - tls.SERVER_DAYS + 1))
    later = tls.ensure_self_signed(tmp_path, names=["box"], addresses=["127.0.0.1"])
    assert later.replaced_ca and later.created and later.ca_pem.read_bytes() != ca_before
    ca = x509.load_pem_x509_certificate(later.ca_pem.read_bytes())
    leaf = x509.load_pem_x509_certificate(later.server_pem.read_bytes())
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
