"""CURVE keys for the trainer: who may talk to the queue, and as what.

ZeroMQ's CURVE (pyzmq's ``zmq.auth``, ZAP) encrypts every connection and tells the queue which public key
sent each message. The queue's keys folder (``sensorsynth trainer keys init``) holds:

    server.key, server.key_secret   the queue's own key pair (the secret one 0600); peers need server.key
    workers/NAME.key                public keys allowed to say ``ready`` and be given audio
    clients/NAME.key                public keys allowed to submit and to see, cancel, fetch their own jobs
    admins/NAME.key                 public keys allowed all of that for every job, ``replace``, announcements
    local-worker/, admin/           bundles for this machine: the trainer's own workers, and its operator
    issued/NAME/                    bundles made by ``add-worker``/``add-client`` for another machine

A *bundle* is what a peer needs: a folder with ``server.key`` (the queue's public key) and ``id.key_secret``
(its own key pair). ``--keys DIR`` on a peer accepts a bundle, or the queue's own folder (a worker then
uses ``local-worker/``, a client ``admin/``), so one machine needs no copying at all.

The allowed keys are read again whenever one of the role folders changes, so adding or removing a key takes
effect without a restart (for new connections at once, for connected peers at their next message).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

ROLES = ("workers", "clients", "admins")
SERVER = "server"
BUNDLE_KEY = "id"
LOCAL_WORKER = "local-worker"
LOCAL_ADMIN = "admin"
QUEUE_DOMAIN = "sensorsynth-queue"
ANNOUNCE_DOMAIN = "sensorsynth-announce"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeysError(ValueError):
    """A keys folder that cannot be used; the message says which file and what to run."""


def is_loopback(endpoint: str) -> bool:
    """True when ``endpoint`` can only be reached from this machine (127.0.0.0/8, ::1, localhost, ipc, inproc).
    A wildcard (``*``, ``0.0.0.0``), an interface name or any other address is beyond loopback."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = re.match(r"^tcp://(\[[^\]]+\]|[^:]+):(\d+|\*)$", endpoint)
    if not match:
        return False
    host = match.group(1).strip("[]")
    return host in ("localhost", "::1") or re.match(r"^127\.\d+\.\d+\.\d+$", host) is not None


def fingerprint(z85: str | bytes) -> str:
    """12 hex digits naming a public key: a worker's id starts ``w-<fingerprint>`` so the id names the key."""
    import hashlib

    return hashlib.sha256(z85.encode() if isinstance(z85, str) else z85).hexdigest()[:12]


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def _new_pair(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    _private(Path(secret))
    return Path(public), Path(secret)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeysError(f"{name!r} is not a key name: use letters, digits, '.', '_' and '-' (at most 64)")
    return name


def public_z85(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: not a ZeroMQ key file ({exc})") from None
    if public is None or len(public) != 40:
        raise KeysError(f"{path}: has no public-key line")
    return public


# ---------------------------------------------------------------------------------------- the queue's side


def init(folder: Path) -> list[str]:
    """Make the queue's key pair, the role folders and this machine's two bundles; keep what exists.
    Returns one line per thing made."""
    made: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if not (folder / f"{SERVER}.key_secret").exists():
        _new_pair(folder, SERVER)
        made.append(f"the queue's key pair: {folder / SERVER}.key (public) and .key_secret (0600)")
    for role in ROLES:
        (folder / role).mkdir(exist_ok=True)
    for bundle, role in ((LOCAL_WORKER, "workers"), (LOCAL_ADMIN, "admins")):
        if not (folder / bundle / f"{BUNDLE_KEY}.key_secret").exists():
            _issue(folder, bundle, role, folder / bundle)
            who = "workers" if role == "workers" else "operator (admin)"
            made.append(f"{folder / bundle}/: keys for this machine's {who}")
    return made


def server_public(folder: Path) -> Path:
    path = folder / f"{SERVER}.key"
    if not path.exists() or not (folder / f"{SERVER}.key_secret").exists():
        raise KeysError(f"{folder}: no queue keys here; run `sensorsynth trainer keys init --keys {folder}`")
    return path


def _issue(folder: Path, name: str, role: str, bundle: Path) -> Path:
    """A new key pair for a peer: its public key allowed in ``role``, its bundle written to ``bundle``."""
    server = server_public(folder)
    bundle.mkdir(parents=True, exist_ok=True)
    os.chmod(bundle, 0o700)
    public, _ = _new_pair(bundle, BUNDLE_KEY)
    shutil.copyfile(server, bundle / f"{SERVER}.key")
    shutil.copyfile(public, folder / role / f"{name}.key")
    return bundle


def add(folder: Path, role: str, name: str, public: Path | None = None) -> str:
    """Allow a peer in ``role`` (workers, clients, admins). Without ``public``, a key pair is made for it and
    its bundle written to ``issued/NAME``; with ``public`` (a key made on the peer's machine by ``keys new``),
    only that public key is registered. Returns a line that says what to do next."""
    check_name(name)
    if role not in ROLES:
        raise KeysError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    server_public(folder)
    (folder / role).mkdir(exist_ok=True)
    target = folder / role / f"{name}.key"
    if target.exists():
        raise KeysError(f"{target} exists: `sensorsynth trainer keys remove {name}` first to replace it")
    if public is not None:
        z85 = public_z85(public)
        target.write_text(f"# {role[:-1]} {name}\nmetadata\ncurve\n    public-key = \"{z85.decode()}\"\n")
        return (f"allowed {role[:-1]} {name} ({z85.decode()[:12]}…); give it {folder / SERVER}.key as server.key "
                "in its keys folder")
    (folder / "issued").mkdir(mode=0o700, exist_ok=True)
    bundle = _issue(folder, name, role, folder / "issued" / name)
    return (f"allowed {role[:-1]} {name}; copy {bundle}/ to that machine (it holds a secret key: copy it privately, "
            f"then delete it here) and use it there with --keys")


def new_bundle(folder: Path) -> Path:
    """On a peer's machine: a key pair of its own (``id.key`` to register on the queue with ``--public``)."""
    if (folder / f"{BUNDLE_KEY}.key_secret").exists():
        raise KeysError(f"{folder} already holds a key pair")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    public, _ = _new_pair(folder, BUNDLE_KEY)
    return public


def remove(folder: Path, name: str) -> list[Path]:
    """Take ``name`` out of every role (and its issued bundle). Connected peers are refused from their next
    message on; the queue needs no restart."""
    check_name(name)
    gone = [p for role in ROLES if (p := folder / role / f"{name}.key").exists()]
    for path in gone:
        path.unlink()
    if (folder / "issued" / name).is_dir():
        shutil.rmtree(folder / "issued" / name)
    return gone


def listing(folder: Path) -> list[tuple[str, str, str]]:
    """(role, name, the key's first 12 characters) for every allowed key."""
    rows = []
    for role in ROLES:
        for path in sorted((folder / role).glob("*.key")):
            try:
                rows.append((role[:-1], path.stem, public_z85(path).decode()[:12]))
            except KeysError:
                rows.append((role[:-1], path.stem, "(unreadable)"))
    return rows


class KeyRing:
    """The allowed public keys by role, read again when a role folder changes (checked at most every
    ``every_s``). Thread-safe: the ZAP thread and the queue's loop both ask it."""

    def __init__(self, folder: Path, every_s: float = 0.5) -> None:
        self.folder = folder
        self.every_s = every_s
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._checked = -1e9
        self._roles: dict[bytes, frozenset[str]] = {}
        self.refresh(force=True)

    def _stamps(self) -> tuple:
        out = []
        for role in ROLES:
            try:
                out.append((self.folder / role).stat().st_mtime_ns)
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self, force: bool = False) -> None:
        import time

        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked < self.every_s:
                return
            self._checked = now
            stamp = self._stamps()
            if stamp == self._stamp and not force:
                return
            roles: dict[bytes, set[str]] = {}
            for role in ROLES:
                for path in (self.folder / role).glob("*.key"):
                    try:
                        roles.setdefault(public_z85(path), set()).add(role[:-1])
                    except KeysError:
                        continue
            self._roles = {k: frozenset(v) for k, v in roles.items()}
            self._stamp = stamp

    def roles(self, z85: bytes | str) -> frozenset[str]:
        self.refresh()
        key = z85.encode() if isinstance(z85, str) else z85
        return self._roles.get(key, frozenset())


class _Provider:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def callback(self, domain: str, key: bytes) -> bool:
        roles = self.ring.roles(key)
        if domain == ANNOUNCE_DOMAIN:
            return "admin" in roles
        return bool(roles)


@dataclass
class ServerKeys:
    """The queue's CURVE setup: its key pair, the ring of allowed keys and the ZAP thread that asks it."""

    folder: Path
    public: bytes
    secret: bytes
    ring: KeyRing
    auth: ThreadAuthenticator | None = None

    @classmethod
    def load(cls, folder: Path) -> "ServerKeys":
        server_public(folder)
        secret_file = folder / f"{SERVER}.key_secret"
        mode = secret_file.stat().st_mode & 0o077
        if mode:
            raise KeysError(f"{secret_file} can be read by others (mode {oct(secret_file.stat().st_mode & 0o777)}); "
                            f"chmod 600 it")
        public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise KeysError(f"{secret_file}: has no secret key")
        return cls(folder, public, secret, KeyRing(folder))

    def start(self, context: zmq.Context) -> None:
        """The ZAP handler (one per context): every CURVE handshake is checked against the ring."""
        auth = ThreadAuthenticator(context)
        auth.start()
        provider = _Provider(self.ring)
        for domain in (QUEUE_DOMAIN, ANNOUNCE_DOMAIN):
            auth.configure_curve_callback(domain, provider)
        self.auth = auth

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None

    def serve(self, sock: zmq.Socket, domain: str) -> None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())


# ------------------------------------------------------------------------------------------ a peer's side


@dataclass(frozen=True)
class PeerKeys:
    """What a worker or a client needs to reach a CURVE queue: the queue's public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes
    where: str

    @classmethod
    def load(cls, folder: str | os.PathLike[str], role: str = "client") -> "PeerKeys":
        """From a bundle, or from the queue's own folder (``local-worker/`` for a worker, ``admin/`` else)."""
        base = Path(folder)
        bundle = base
        if not (base / f"{BUNDLE_KEY}.key_secret").exists():
            inner = base / (LOCAL_WORKER if role == "worker" else LOCAL_ADMIN)
            if (inner / f"{BUNDLE_KEY}.key_secret").exists():
                bundle = inner
            else:
                raise KeysError(f"{base}: no {BUNDLE_KEY}.key_secret here (a keys bundle from `sensorsynth trainer "
                                f"keys add-{role}`, or the trainer's own keys folder)")
        server_file = bundle / f"{SERVER}.key"
        if not server_file.exists() and (bundle.parent / f"{SERVER}.key").exists():
            server_file = bundle.parent / f"{SERVER}.key"
        if not server_file.exists():
            raise KeysError(f"{bundle}: no {SERVER}.key (the trainer's public key: copy it from the trainer's keys "
                            "folder)")
        server_public = public_z85(server_file)
        public, secret = zmq.auth.load_certificate(str(bundle / f"{BUNDLE_KEY}.key_secret"))
        if secret is None or public is None:
            raise KeysError(f"{bundle / BUNDLE_KEY}.key_secret: has no secret key")
        return cls(server_public, public, secret, str(bundle))

    def apply(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def peer_keys(folder: Any, role: str = "client") -> PeerKeys | None:
    """``folder`` as PeerKeys (None stays None; PeerKeys pass through)."""
    if folder is None or isinstance(folder, PeerKeys):
        return folder
    return PeerKeys.load(folder, role)
