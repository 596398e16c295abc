"""Who may play: the WebSocket's token and Origin rules, as a pure check (request path and headers in, a
reason to refuse out), so the policy is tested without sockets.

- **Token.** When the server listens beyond localhost, playing requires a token: the configured
  ``ws_token``, or one generated at start and printed inside the page address (``/?token=...``; the pages
  pass it on to ``/ws?token=...``). A client may also send ``Authorization: Bearer <token>``. Clients on
  this machine (a loopback peer) need no generated token; a configured token is required from everyone.
- **Origin.** A browser always sends ``Origin``; a page from another site (a drive-by page on the same
  network) must not drive the installation, so ``Origin`` must be this server itself (same host and port as
  the request's ``Host``) or one of ``allowed_origins``. Clients that send no ``Origin`` (scripts, the hands
  adapter, TouchDesigner) are judged by the token alone.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    loopback_exempt: bool = True  # False when the token was configured: then it is asked of everyone

    @classmethod
    def for_host(cls, host: str, token: str | None, allowed_origins: list[str] | None = None) -> "AccessPolicy":
        """The policy for a server bound to ``host``: a token is generated when none is configured and the
        server is reachable from other machines."""
        configured = token is not None
        if token is None and not is_loopback(host):
            token = new_token()
        origins = frozenset(o.rstrip("/").lower() for o in (allowed_origins or []))
        return cls(token or None, origins, loopback_exempt=not configured)

    def refuse_ws(self, path: str, headers, peer: str = "") -> str | None:
        """Why this WebSocket upgrade request (from IP ``peer``) is refused, or None to accept it."""
        origin = headers.get("Origin")
        if origin is not None:
            o = origin.rstrip("/").lower()
            host = (headers.get("Host") or "").lower()
            same = urlsplit(o).netloc == host and host != ""
            if not same and o not in self.allowed_origins:
                return f"origin {origin!r} is not allowed (only pages served by this server, or allowed_origins)"
        if self.token is not None and not (self.loopback_exempt and is_loopback(peer)):
            given = parse_qs(urlsplit(path).query).get("token", [""])[0]
            auth = headers.get("Authorization") or ""
            if auth.lower().startswith("bearer "):
                given = given or auth[7:].strip()
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return "a valid token is required (open the page address printed at start, or pass ?token=)"
        return None
