"""Who sent a message, and what they may do: pure functions over the sender's routing id, its CURVE key (as
ZAP reported it) and the roles of that key. No sockets and no clock here; :mod:`.broker` asks these for
every message and refuses, with a clear ``forbidden`` error, what they do not allow.

- With keys, a peer is its public key (``key:<z85>``); its roles are the folders its key is in.
- Without keys (loopback only), a peer is the user id it names in its routing id (``u<uid>.<random>``, as
  the CLI and :class:`~.client.TrainerClient` connect), else that connection. The trainer's own user is
  the admin. Any local process can name any user: this keeps one user's jobs apart from another's by
  convention; keys are the defence (docs/trainer-security.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

WORKER_MESSAGES = frozenset({"ready", "heartbeat", "progress", "done", "failed", "bye"})
CLIENT_MESSAGES = frozenset({"submit", "watch", "list", "cancel", "fetch"})
_LOCAL_ID = re.compile(rb"^u(\d{1,10})\.[A-Za-z0-9]{1,32}$")


@dataclass(frozen=True)
class Peer:
    """Who sent a message: ``owner`` names them in the store; ``roles`` say what they may do."""

    owner: str
    roles: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.roles

    @property
    def client(self) -> bool:
        return "client" in self.roles or "admin" in self.roles

    @property
    def worker(self) -> bool:
        return "worker" in self.roles

    @property
    def key(self) -> str | None:
        """The z85 public key, for a peer that has one."""
        return self.owner[len("key:"):] if self.owner.startswith("key:") else None


def identify(identity: bytes, user_id: str | None, roles_of: Callable[[str], frozenset[str]] | None,
             local_admin_uid: int | None) -> Peer | None:
    """The peer behind a message. ``roles_of`` is the key ring's lookup when the queue has keys (None
    without); None comes back for a key that is not (or no longer) allowed."""
    if roles_of is not None:
        if not user_id:
            return None
        roles = roles_of(user_id)
        return Peer(f"key:{user_id}", roles) if roles else None
    match = _LOCAL_ID.match(identity)
    if match:
        uid = int(match.group(1))
        admin = local_admin_uid is not None and uid == local_admin_uid
        return Peer(f"local:u{uid}", frozenset({"worker", "client", "admin"} if admin else {"worker", "client"}))
    return Peer(f"local:{identity.hex()}", frozenset({"worker", "client"}))


def may_send(peer: Peer, message_type: str) -> bool:
    """Worker messages from workers, client requests from clients (and admins); ``hello`` from anyone."""
    if message_type in WORKER_MESSAGES:
        return peer.worker
    if message_type in CLIENT_MESSAGES:
        return peer.client
    return True


def may_see(peer: Peer, owner: str) -> bool:
    """A job's submitter, or an admin, may watch, cancel and fetch it."""
    return peer.admin or owner == peer.owner


def may_replace(peer: Peer, maker: str | None, active_owners: list[str]) -> bool:
    """``replace=true`` over an existing instrument (made by ``maker``, None when the trainer did not make
    it) or over jobs fitting that name: an admin, or the one who made it and is fitting it."""
    return peer.admin or (maker == peer.owner and all(o == peer.owner for o in active_owners))
