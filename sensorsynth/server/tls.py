"""HTTPS/WSS for ``sensorsynth serve``: a given certificate, or a self-signed one made for this machine.

A phone only hands motion sensors to a page in a *secure context*, so the phone page needs https (and the
WebSocket wss) as soon as it is opened from another machine. Two ways:

- ``--tls-cert FILE [--tls-key FILE]``: a certificate you already have (PEM; the key may be in the same file);
- ``--tls self-signed``: one is made for this machine's LAN addresses and hostname and kept in a data folder
  (``--tls-dir``, default ``$XDG_DATA_HOME/sensorsynth/tls`` or ``~/.local/share/sensorsynth/tls``), so it is
  the same certificate on every restart and a phone that accepted it once keeps accepting it.

The self-signed setup is a tiny local certificate authority (``ca.pem``) that signs the server's certificate
(``server.pem``: key and certificate in one file, 397 days, ECDSA P-256). Why two: a phone trusts a
certificate for good only when a CA certificate is installed on it (iOS: a profile, then "Certificate Trust
Settings"), and Firefox refuses a CA certificate used directly as a server's. Without installing anything,
the phone's browser shows a warning once and the page works after "continue".

A CA on a phone is a key to everything that phone trusts, so this one is constrained (docs/security.md):

- **Name constraints** (critical): it may only vouch for this machine's own names and addresses, exactly the
  ones its server certificate carries. Whoever copies ``ca-key.pem`` can mint a certificate a phone accepts
  for this box, and for nothing else (not a bank, not the venue's router).
- **A short life**: 825 days (it was ten years), re-minted when fewer than 397 days are left, so every server
  certificate lives its full 397 days inside the CA's life and a phone re-trusts a new CA about every 14
  months.
- **Re-minted when the names change**: a new address or host name needs a CA that permits it, so the CA is
  replaced and phones that trusted the old one must accept the new one (the start-up message says so). The
  names a certificate had are kept, so moving between two networks re-mints once, not every time.

The server certificate is reused while it covers every current name and address, is signed by the CA in the
folder and has more than 30 days left; otherwise it is re-issued. Files are written atomically under a lock,
keys with mode 0600.

Generation uses the ``cryptography`` package (a dependency): it works the same on every platform, where an
``openssl`` command line may be missing (Windows) or differ (LibreSSL on macOS).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..atomic import atomic_write

CA_DAYS = 825  # Apple's old limit for any certificate; the CA is replaced once it has under SERVER_DAYS left
SERVER_DAYS = 397  # Apple's limit for server certificates is 825 days (398 for public CAs); stay under both
RENEW_DAYS = 30  # a server certificate with less left is re-issued at start-up
CA_NAME = "sensorsynth local CA"


class TlsError(Exception):
    """A certificate or key that cannot be used, or a folder that cannot be written; the message says which."""


def default_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sensorsynth" / "tls"


# ---------------------------------------------------------------------------------------------- this machine


def _route_address(family: int, probe: str) -> str | None:
    """The address this machine would use to reach the network (connect() on UDP sends nothing)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def _interface_addresses() -> list[str]:
    """IPv4 addresses of every interface (Linux; elsewhere the route and the hostname give the main one)."""
    out: list[str] = []
    try:
        import fcntl
        import struct

        names = [name for _, name in socket.if_nameindex()]
    except (ImportError, OSError, AttributeError):
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
                out.append(socket.inet_ntoa(res[20:24]))
            except OSError:
                continue
    return out


def _usable(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return not (ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def local_names() -> tuple[list[str], list[str]]:
    """(host names, IP addresses) a browser on this network, or on this machine, may use to reach it.

    The first address is the LAN one (the one to print), when there is a network."""
    host = socket.gethostname() or "localhost"
    names = [host]
    if "." not in host:
        names.append(f"{host}.local")  # mDNS/Bonjour: what a phone resolves without a DNS server
    names.append("localhost")  # (no reverse DNS lookup for a domain name: it can hang start-up for seconds)

    addrs: list[str] = []
    lan = _route_address(socket.AF_INET, "192.0.2.1")  # TEST-NET-1: only picks a route
    if lan:
        addrs.append(lan)
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(host, None):
            addrs.append(str(info[4][0]))
    addrs += _interface_addresses()
    v6 = _route_address(socket.AF_INET6, "2001:db8::1")
    if v6:
        addrs.append(v6)
    addrs += ["127.0.0.1", "::1"]
    return _dedupe(n.lower() for n in names), _dedupe(a for a in addrs if _usable(a))


def _dedupe(items) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        if x and x not in seen:
            seen[x] = None
    return list(seen)


def preferred_address(addresses: list[str]) -> str:
    """The address to print: a private IPv4 LAN address if there is one, else the first."""
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if ip.version == 4 and not ip.is_loopback:
            return a
    return addresses[0] if addresses else "127.0.0.1"


# ---------------------------------------------------------------------------------------------- certificates


@dataclass
class SelfSigned:
    folder: Path
    server_pem: Path  # key and certificate
    ca_pem: Path  # the CA certificate, to install on a phone for no warning
    names: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    not_after: dt.datetime | None = None
    created: bool = False  # a new server certificate was written this time
    replaced_ca: bool = False  # an earlier CA was unusable or expiring: phones that trusted it must accept again

    def describe(self) -> str:
        what = "new" if self.created else "reused"
        until = f", valid until {self.not_after:%Y-%m-%d}" if self.not_after else ""
        return f"self-signed certificate ({what}{until}) for {', '.join(self.addresses + self.names)}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; two servers starting at once may each write a file
        yield
        return
    with open(folder / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write(path: Path, data: bytes, private: bool) -> None:
    atomic_write(path, data, mode=0o600 if private else 0o644)


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _load_pair(path: Path):
    """(key, certificate) from one PEM file, or None when missing or unusable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        cert = x509.load_pem_x509_certificate(data)
    except (OSError, ValueError, TypeError):
        return None
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        return None
    return key, cert


def _host_network(address: str):
    """The one-address network (/32 or /128) a name constraint permits for ``address``."""
    ip = ipaddress.ip_address(address)
    return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")


def _name_constraints(names: list[str], addresses: list[str]):
    from cryptography import x509

    permitted = [x509.DNSName(n) for n in names] + [x509.IPAddress(_host_network(a)) for a in addresses]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def permitted_names(ca_cert) -> tuple[list[str], list[str]] | None:
    """(DNS names, addresses) a CA certificate's name constraints permit; None when it has none (it may sign
    for anything: a CA made before constraints, which is replaced)."""
    from cryptography import x509

    try:
        ext = ca_cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
    if not ext.critical or ext.value.excluded_subtrees or not ext.value.permitted_subtrees:
        return None
    names, addrs = [], []
    for sub in ext.value.permitted_subtrees:
        if isinstance(sub, x509.DNSName):
            names.append(sub.value.lower())
        elif isinstance(sub, x509.IPAddress) and sub.value.prefixlen == sub.value.max_prefixlen:
            addrs.append(str(sub.value.network_address))
        else:
            return None  # a wider subtree than one name or address: not one of ours
    return names, addrs


def _make_ca(names: list[str], addresses: list[str]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME} ({socket.gethostname() or 'this machine'})"[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sensorsynth"),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_name_constraints(names, addresses), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server(ca_key, ca_cert, names: list[str], addresses: list[str]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    common = (addresses[0] if addresses else names[0])[:64]
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sensorsynth")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _san(cert) -> tuple[list[str], list[str]]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return ([str(n).lower() for n in ext.get_values_for_type(x509.DNSName)],
            [str(a) for a in ext.get_values_for_type(x509.IPAddress)])


def _signed_by(cert, ca_cert) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, another key type: not signed by this CA
        return False


def _fresh(cert, days: int) -> bool:
    return cert.not_valid_after_utc - _now() > dt.timedelta(days=days)


def ensure_self_signed(folder: str | Path | None = None, names: list[str] | None = None,
                       addresses: list[str] | None = None) -> SelfSigned:
    """The self-signed server certificate in ``folder`` for these names and addresses (default: this
    machine's), made or re-issued only when needed. Raises TlsError when the folder cannot be used."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise TlsError("--tls self-signed needs the 'cryptography' package: pip install cryptography") from None
    folder = Path(folder) if folder is not None else default_dir()
    if names is None or addresses is None:
        found_names, found_addrs = local_names()
        names = found_names if names is None else names
        addresses = found_addrs if addresses is None else addresses
    names = _dedupe(n.lower() for n in names)
    addresses = _dedupe(str(ipaddress.ip_address(a)) for a in addresses)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o700)
        with _locked(folder):
            return _ensure_locked(folder, names, addresses)
    except OSError as exc:
        raise TlsError(f"cannot keep the TLS certificate in {folder}: {exc.strerror or exc}") from None


def _ensure_locked(folder: Path, names: list[str], addresses: list[str]) -> SelfSigned:
    ca_key_path, ca_pem, server_pem = folder / "ca-key.pem", folder / "ca.pem", folder / "server.pem"
    result = SelfSigned(folder, server_pem, ca_pem)
    ca = _load_pair(ca_key_path)
    current = _load_pair(server_pem)
    if current is not None and (ca is None or not _signed_by(current[1], ca[1])):
        current = None  # from a lost or replaced CA: re-issued below
    want_names, want_addrs = names, addresses
    if current is not None:
        # Keep what it covered: a laptop moving between two networks settles on one certificate for both.
        have_names, have_addrs = _san(current[1])
        want_names, want_addrs = _dedupe(names + have_names), _dedupe(addresses + have_addrs)
    permitted = permitted_names(ca[1]) if ca is not None else None
    if (ca is None or not _fresh(ca[1], SERVER_DAYS) or permitted is None
            or not set(want_names) <= set(permitted[0]) or not set(want_addrs) <= set(permitted[1])):
        result.replaced_ca = ca_key_path.exists()
        ca = _make_ca(want_names, want_addrs)
        _write(ca_key_path, _key_pem(ca[0]) + _cert_pem(ca[1]), private=True)
        current = None
    ca_key, ca_cert = ca
    if not ca_pem.exists() or ca_pem.read_bytes() != _cert_pem(ca_cert):
        _write(ca_pem, _cert_pem(ca_cert), private=False)

    if current is not None and _fresh(current[1], RENEW_DAYS):
        have_names, have_addrs = _san(current[1])
        if set(names) <= set(have_names) and set(addresses) <= set(have_addrs):
            result.names, result.addresses = have_names, have_addrs
            result.not_after = current[1].not_valid_after_utc
            return result
    key, cert = _make_server(ca_key, ca_cert, want_names, want_addrs)
    _write(server_pem, _key_pem(key) + _cert_pem(cert), private=True)
    result.names, result.addresses = want_names, want_addrs
    result.not_after = cert.not_valid_after_utc
    result.created = True
    return result


# ---------------------------------------------------------------------------------------------- the server side


def server_context(cert: str | Path, key: str | Path | None = None) -> ssl.SSLContext:
    """An SSL context for the server from PEM files (the key may sit in the certificate file)."""
    cert = Path(cert)
    if not cert.is_file():
        raise TlsError(f"TLS certificate {cert}: no such file")
    if key is not None and not Path(key).is_file():
        raise TlsError(f"TLS key {key}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    except ssl.SSLError as exc:
        why = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in why:
            why = "the key does not belong to the certificate"
        elif "PEM" in why:
            why = "no PEM certificate and private key found"
        hint = "" if key is not None else " (no --tls-key given: the key must be in the certificate file)"
        raise TlsError(f"cannot use TLS certificate {cert}{' with key ' + str(key) if key else ''}: {why}{hint}") from None
    except OSError as exc:
        raise TlsError(f"cannot read TLS certificate {cert}: {exc.strerror or exc}") from None
    return ctx


def certificate_names(cert: str | Path) -> list[str]:
    """The names and addresses a PEM certificate covers (best effort: empty when it cannot be read)."""
    try:
        from cryptography import x509

        names, addrs = _san(x509.load_pem_x509_certificate(Path(cert).read_bytes()))
    except Exception:  # noqa: BLE001 - only for the start-up message
        return []
    return addrs + names


@dataclass
class TlsSetup:
    context: ssl.SSLContext
    lines: list[str]  # for the start-up message


def setup(mode: str = "off", cert: str | Path | None = None, key: str | Path | None = None,
          folder: str | Path | None = None) -> TlsSetup | None:
    """The server's TLS from its options (``tls``, ``tls_cert``, ``tls_key``, ``tls_dir``): None for plain
    http/ws. Raises TlsError with a message naming the option or the file."""
    if mode not in ("off", "self-signed"):
        raise TlsError(f"--tls {mode}: use off or self-signed")
    if key is not None and cert is None:
        raise TlsError("--tls-key needs --tls-cert")
    if cert is not None and mode == "self-signed":
        raise TlsError("--tls self-signed and --tls-cert: give one or the other")
    if cert is not None:
        ctx = server_context(cert, key)
        covered = certificate_names(cert)
        shown = f" for {', '.join(covered)}" if covered else ""
        return TlsSetup(ctx, [f"  TLS: certificate {cert}{shown}"])
    if mode == "self-signed":
        made = ensure_self_signed(folder)
        ctx = server_context(made.server_pem)
        lines = [f"  TLS: {made.describe()}, in {made.folder}",
                 f"       a phone warns once (accept it), or install {made.ca_pem} on it to trust this server"]
        if made.replaced_ca:
            lines.append("       (the local CA was replaced: phones that trusted the earlier one must accept again)")
        return TlsSetup(ctx, lines)
    return None
