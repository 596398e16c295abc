"""Who may play: the WebSocket's Host, token and Origin rules, as a pure check (request path and headers in,
a reason to refuse out), so the policy is tested without sockets. The threat model behind it is
``docs/server-security.md``.

- **Host.** Every HTTP request and WebSocket upgrade must name this server in ``Host``: one of its own names
  (hostname, ``hostname.local``, ``localhost``), its own addresses (every interface, ``127.0.0.1``, ``::1``),
  the names its TLS certificate covers, or a configured ``allowed_hosts`` entry. Any IP literal is accepted
  too (see ``_is_ip``: only a name can be rebound). A page on another site that
  re-points its own name at this machine (DNS rebinding: ``Host: rebind.example``) is refused before the
  upgrade, so it can neither play nor read ``/health``.
- **Token.** There is always a token: the configured ``ws_token``, or one generated at start (shown inside the
  page address, ``/?token=...``; the pages pass it on to ``/ws?token=...``). A client may also send
  ``Authorization: Bearer <token>``. A **browser** (any request with ``Origin``) needs it always, even from this
  machine: a page on this machine is no more trusted than the sites open in its other tabs. A client on this
  machine without ``Origin`` (scripts, the hands adapter, TouchDesigner) needs no *generated* token; a
  configured token is asked of everyone.
- **Origin.** A page from another site must not drive the installation, so ``Origin`` must be this server
  itself (same host and port as the request's ``Host``) or one of ``allowed_origins``.
- **Admin.** Replacing an existing instrument (``upload`` with ``replace: true``) needs ``admin_token``.

Tokens: a configured token shorter than ``MIN_TOKEN_CHARS`` or the placeholder shipped in ``deploy/`` is
refused at start-up (``check_token``), with one line saying how to make one.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

MIN_TOKEN_CHARS = 16
# What example configs have shipped, and what people type when asked for "a token".
PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "your-token", "your_token",
                "example", "placeholder", "<")
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def new_token() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def check_token(token: str, what: str = "ws_token") -> str:
    """``token`` if it can protect an installation, else ValueError with one line saying why and how to make
    one. Refused: shorter than MIN_TOKEN_CHARS, a known placeholder (``change-me...``), one repeated character."""
    t = token.strip()
    low = t.lower()
    if len(t) < MIN_TOKEN_CHARS:
        raise ValueError(f"{what} is {len(t)} characters; at least {MIN_TOKEN_CHARS} are needed (make one with: "
                         f"{MAKE_ONE})")
    if any(low.startswith(p) for p in PLACEHOLDERS) or "change-me" in low or len(set(t)) < 4:
        raise ValueError(f"{what} is the example's placeholder, not a secret: make one with: {MAKE_ONE}")
    return t


def mask(token: str | None) -> str:
    """A token as it may appear in a log or the journal: its first 4 characters only."""
    if not token:
        return ""
    return token[:4] + "…(masked)"


def split_host(host_header: str) -> str:
    """The host part of a ``Host`` header value, lower case, without port, brackets or a trailing dot."""
    h = host_header.strip().lower()
    if h.startswith("["):  # [::1]:8765
        end = h.find("]")
        return h[1:end] if end > 0 else h
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def canonical_host(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower().rstrip(".")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.compressed


def _is_ip(host: str) -> bool:
    """An IP literal: a browser sends one only for a page it loaded from that very address, which is then this
    server (rebinding needs a name the attacker controls), so any address is safe to accept. This keeps the
    pages working behind Docker's port publishing or a NAT, where the address used is not the container's."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def own_hosts(bind_host: str = "", tls_names: Iterable[str] = ()) -> frozenset[str]:
    """The names and addresses this machine answers to: hostname (and ``.local``), ``localhost``, every
    interface address, ``127.0.0.1``, ``::1``, the bound address, and the TLS certificate's names."""
    from .tls import local_names  # stdlib only; the same list the self-signed certificate is made for

    names, addrs = local_names()
    found = {*names, *addrs, "localhost", "127.0.0.1", "::1", *tls_names}
    if bind_host and bind_host not in ("0.0.0.0", "::"):
        found.add(bind_host)
    return frozenset(canonical_host(h) for h in found if h)


def _all(headers, name: str) -> list[str]:
    """Every value of header ``name`` (websockets' Headers, or a plain dict in unit tests): a duplicated header
    is seen as such, never raised from deep inside a handler."""
    if hasattr(headers, "get_all"):
        return list(headers.get_all(name))
    value = headers.get(name)
    return [] if value is None else [value]


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    loopback_exempt: bool = True  # False when the token was configured: then it is asked of everyone
    hosts: frozenset[str] | None = None  # allowed Host values (canonical); None: any (unit tests only)
    admin_token: str | None = None
    configured: bool = field(default=False, compare=False)  # the token came from the config (not generated)

    @classmethod
    def for_host(cls, host: str, token: str | None, allowed_origins: list[str] | None = None,
                 allowed_hosts: Iterable[str] | None = None, admin_token: str | None = None,
                 tls_names: Iterable[str] = (), check_hosts: bool = True) -> "AccessPolicy":
        """The policy for a server bound to ``host``: a token is generated when none is configured (browsers
        always need one), and ``Host`` must be one of this machine's names or ``allowed_hosts``."""
        configured = token is not None
        if token is not None:
            token = check_token(token)
        if admin_token is not None:
            admin_token = check_token(admin_token, "admin_token")
            if token is not None and hmac.compare_digest(admin_token, token):
                raise ValueError("admin_token must differ from ws_token (every player knows ws_token)")
        origins = frozenset(o.rstrip("/").lower() for o in (allowed_origins or []))
        hosts = None
        if check_hosts:
            hosts = own_hosts(host, tls_names) | frozenset(canonical_host(split_host(h)) for h in (allowed_hosts or []))
        return cls(token or new_token(), origins, loopback_exempt=not configured, hosts=hosts,
                   admin_token=admin_token, configured=configured)

    @classmethod
    def from_config(cls, config) -> "AccessPolicy":
        """The policy of ``sensorsynth serve`` from its ``ServeConfig`` (TLS names read from the certificate)."""
        from .tls import certificate_names

        tls_names: list[str] = []
        if config.tls_cert is not None:
            tls_names = certificate_names(config.tls_cert)
        elif config.tls == "self-signed" and config.tls_dir is not None:
            tls_names = certificate_names(Path(config.tls_dir) / "server.pem")
        return cls.for_host(config.host, config.ws_token, config.allowed_origins, config.allowed_hosts,
                            config.admin_token, tls_names)

    def page_query(self, show: bool) -> str:
        """``?token=...`` for the page addresses printed at start: the whole token only when ``show`` (an
        interactive terminal), else masked, so the journal never holds it."""
        return f"?token={self.token if show else mask(self.token)}" if self.token else ""

    # ------------------------------------------------------------------ the checks
    def refuse_host(self, headers) -> str | None:
        """Why a request with these headers is refused for its ``Host``, or None. Duplicate ``Host`` headers
        are refused too (which one would a proxy have used?)."""
        values = _all(headers, "Host")
        if len(values) != 1:
            return "exactly one Host header is required" if values else "a Host header is required"
        if self.hosts is None or "*" in self.hosts:
            return None
        host = canonical_host(split_host(values[0]))
        if host in self.hosts or _is_ip(host):
            return None
        return (f"Host {values[0][:80]!r} is not a name of this server (a DNS-rebinding page?); if it is one, add "
                "it to allowed_hosts")

    def refuse_ws(self, path: str, headers, peer: str = "") -> str | None:
        """Why this WebSocket upgrade request (from IP ``peer``) is refused, or None to accept it."""
        refused = self.refuse_host(headers)
        if refused is not None:
            return refused
        origins = _all(headers, "Origin")
        if len(origins) > 1:
            return "more than one Origin header"
        origin = origins[0] if origins else None
        if origin is not None:
            o = origin.rstrip("/").lower()
            host = _all(headers, "Host")[0].lower()
            same = urlsplit(o).netloc == host and host != ""
            if not same and o not in self.allowed_origins:
                return f"origin {origin[:100]!r} is not allowed (only pages served by this server, or allowed_origins)"
        # A browser (Origin present) always needs the token; a script on this machine needs no generated one.
        exempt = self.loopback_exempt and origin is None and is_loopback(peer)
        if self.token is not None and not exempt and not self.token_ok(path, headers):
            return "a valid token is required (open the page address printed at start, or pass ?token=)"
        return None

    def token_ok(self, path: str, headers) -> bool:
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        auths = _all(headers, "Authorization")
        auth = auths[0] if len(auths) == 1 else ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return bool(given) and self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def is_admin(self, given: str | None) -> bool:
        """Whether ``given`` is the admin token (constant time; False when no admin token is configured)."""
        if not given or self.admin_token is None:
            return False
        return hmac.compare_digest(given.encode(), self.admin_token.encode())
