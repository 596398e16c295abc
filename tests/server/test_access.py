"""The WebSocket's token and Origin rules: the pure policy, then a real server refusing and accepting."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sensorsynth.server.access import AccessPolicy, is_loopback


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.9.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("") and not is_loopback("x")


def test_a_token_is_always_there_generated_or_configured():
    local = AccessPolicy.for_host("127.0.0.1", None)
    assert local.token and len(local.token) >= 16 and local.loopback_exempt, "browsers on this machine need one too"
    p = AccessPolicy.for_host("0.0.0.0", None)
    assert p.token and len(p.token) >= 16 and p.loopback_exempt
    assert AccessPolicy.for_host("0.0.0.0", None).token != p.token
    q = AccessPolicy.for_host("127.0.0.1", "configured-token-0001")
    assert q.token == "configured-token-0001" and not q.loopback_exempt


def test_token_rules():
    p = AccessPolicy.for_host("0.0.0.0", "s3cret-token-0001", check_hosts=False)
    h = {"Host": "10.0.0.2:8765"}
    assert p.refuse_ws("/ws", h, "10.0.0.9") is not None
    assert p.refuse_ws("/ws?token=wrong", h, "10.0.0.9") is not None
    assert p.refuse_ws("/ws?token=s3cret-token-0001", h, "10.0.0.9") is None
    assert p.refuse_ws("/ws", {**h, "Authorization": "Bearer s3cret-token-0001"}, "10.0.0.9") is None
    assert p.refuse_ws("/ws", h, "127.0.0.1") is not None, "a configured token is asked of everyone"
    generated = AccessPolicy.for_host("0.0.0.0", None, check_hosts=False)
    assert generated.refuse_ws("/ws", h, "127.0.0.1") is None, "a script on this machine needs no generated token"
    assert generated.refuse_ws("/ws", h, "10.0.0.9") is not None


def test_origin_rules():
    p = AccessPolicy.for_host("127.0.0.1", None, ["https://studio.example"])
    host = {"Host": "127.0.0.1:8765"}
    t = f"/ws?token={p.token}"
    assert p.refuse_ws(t, {**host, "Origin": "http://127.0.0.1:8765"}, "127.0.0.1") is None, "same origin"
    assert p.refuse_ws(t, {**host, "Origin": "https://studio.example"}, "127.0.0.1") is None, "allowed"
    assert p.refuse_ws(t, {**host, "Origin": "http://evil.example"}, "127.0.0.1") is not None
    assert p.refuse_ws(t, {**host, "Origin": "http://127.0.0.1:9999"}, "127.0.0.1") is not None, "other port"
    assert p.refuse_ws(t, {**host, "Origin": "null"}, "127.0.0.1") is not None, "file:// pages"
    assert p.refuse_ws("/ws", host, "127.0.0.1") is None, "no Origin: not a browser, judged by token only"


async def _try(url: str, origin: str | None = None) -> str:
    try:
        async with connect(url, origin=origin) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            return json.loads(await ws.recv())["type"]
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}"


def test_server_refuses_without_token_and_foreign_origins(start_server):
    server = start_server("--ws-token", "installation-token-1", record=False)  # 20 characters
    base = server.ws_url
    assert asyncio.run(_try(base)) == "refused 403"
    assert asyncio.run(_try(base + "?token=nope")) == "refused 403"
    assert asyncio.run(_try(base + "?token=installation-token-1")) == "welcome"
    assert asyncio.run(_try(base + "?token=installation-token-1", origin="http://evil.example")) == "refused 403"
    assert asyncio.run(_try(base + "?token=installation-token-1", origin=server.url)) == "welcome"
    import urllib.request

    with urllib.request.urlopen(server.url + "/health", timeout=5) as r:
        health = json.loads(r.read())
    assert health["rejected"]["ws:forbidden"] == 3
    assert server.stop() == 0
