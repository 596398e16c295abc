"""Unit tests of the pieces of issue #19 in ``config``, ``access``, ``fits`` and ``web`` (the whole-process tests
are in test_server_security.py): values in, values out, no server process."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from websockets.datastructures import Headers
from websockets.http11 import Request

from sensorsynth.server.access import AccessPolicy, check_token, mask, split_host
from sensorsynth.server.config import ConfigError, ServeConfig, load_config
from sensorsynth.server.fits import (UPLOAD_MAX_CHANNELS, UPLOAD_MAX_RATE, UPLOAD_MAX_SAMPLES, Fit, FitEdge, UploadError,
                                     check_clip, check_header)
from sensorsynth.server.rejections import Rejections
from sensorsynth.server.web import CSP, WebLimits, WebServer

# ------------------------------------------------------------------------------------ config


def test_config_defaults_are_the_safe_ones():
    c = ServeConfig()
    assert c.ws_token is None and c.admin_token is None and c.allowed_hosts is None
    assert (c.max_clients_per_ip, c.max_voices_per_ip, c.hello_timeout_s) == (8, 2, 10.0)
    assert c.osc_controls_all_voices is False and c.osc_messages_per_s == 5000.0 and c.osc_status_peers is None


@pytest.mark.parametrize("key", ["ws_token", "admin_token"])
@pytest.mark.parametrize("value, why", [
    ("change-me-to-a-long-random-string", "placeholder"),
    ("CHANGEME-please-0123456789", "placeholder"),
    ("0123456789abcde", "at least 16"),
    ("x" * 30, "placeholder"),
])
def test_config_refuses_weak_secrets_with_one_line(key, value, why):
    with pytest.raises(ConfigError) as err:
        load_config(None, {key: value})
    text = str(err.value)
    assert "\n" not in text and key in text and why in text and "token_urlsafe" in text


def test_config_accepts_a_real_token_and_checks_status_peers():
    assert load_config(None, {"ws_token": "Zx8-kq2LmN0pQr7sTuv1"}).ws_token == "Zx8-kq2LmN0pQr7sTuv1"
    assert load_config(None, {"osc_status_peers": ["10.0.0.5", "::1"]}).osc_status_peers == ["10.0.0.5", "::1"]
    with pytest.raises(ConfigError, match="osc_status_peers"):
        load_config(None, {"osc_status_peers": ["studio.local"]})


def test_web_limits_come_from_the_config():
    c = load_config(None, {"max_clients_per_ip": 3, "max_voices_per_ip": 1, "hello_timeout_s": 2.5,
                           "ws_messages_per_s": 100.0})
    lim = WebLimits.from_config(c)
    assert (lim.max_clients_per_ip, lim.max_voices_per_ip, lim.hello_timeout_s) == (3, 1, 2.5)
    assert lim.messages_per_s == 100.0 and lim.burst == 200.0 and lim.max_clients == c.max_clients


# ------------------------------------------------------------------------------------ access


def test_host_header_forms():
    assert split_host("127.0.0.1:8765") == "127.0.0.1"
    assert split_host("[::1]:8765") == "::1"
    assert split_host("Studio.Local.") == "studio.local"
    assert split_host("fe80::1") == "fe80::1"


def test_the_host_allow_list():
    p = AccessPolicy.for_host("0.0.0.0", None, allowed_hosts=["synth.example.org", "203.0.113.7"])
    ok = ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "synth.example.org", "203.0.113.7:8765",
          "[::ffff:127.0.0.1]:8765"]
    for host in ok:
        assert p.refuse_host({"Host": host}) is None, host
    for host in ("rebind.example:8765", "evil.localhost.example", "localhost.rebind.example", ""):
        assert p.refuse_host({"Host": host}) is not None, host
    # an IP literal is a page loaded from that address: this server (behind Docker or NAT, not one of its own)
    assert p.refuse_host({"Host": "198.51.100.1:8765"}) is None and p.refuse_host({"Host": "[2001:db8::5]"}) is None
    assert p.refuse_host({}) == "a Host header is required"
    assert AccessPolicy.for_host("0.0.0.0", None, allowed_hosts=["*"]).refuse_host({"Host": "x.example"}) is None


def test_duplicate_headers_are_refused_not_raised():
    p = AccessPolicy.for_host("127.0.0.1", None)
    h = Headers([("Host", "127.0.0.1:1"), ("Host", "127.0.0.1:1")])
    assert "exactly one Host" in p.refuse_ws("/ws", h, "127.0.0.1")
    h = Headers([("Host", "127.0.0.1:1"), ("Origin", "http://127.0.0.1:1"), ("Origin", "http://127.0.0.1:1")])
    assert "more than one Origin" in p.refuse_ws(f"/ws?token={p.token}", h, "127.0.0.1")


def test_admin_token_rules():
    with pytest.raises(ValueError, match="differ"):
        AccessPolicy.for_host("127.0.0.1", "same-token-0123456789", admin_token="same-token-0123456789")
    p = AccessPolicy.for_host("127.0.0.1", None, admin_token="admin-token-0123456789")
    assert p.is_admin("admin-token-0123456789") and not p.is_admin("admin-token-012345678") and not p.is_admin(None)
    assert not AccessPolicy.for_host("127.0.0.1", None).is_admin("anything-at-all-here")


def test_tokens_are_masked_for_logs():
    p = AccessPolicy.for_host("127.0.0.1", "Zx8-kq2LmN0pQr7sTuv1")
    assert p.page_query(show=True) == "?token=Zx8-kq2LmN0pQr7sTuv1"
    assert "kq2LmN0p" not in p.page_query(show=False) and p.page_query(show=False).startswith("?token=Zx8-")
    assert mask(None) == "" and check_token("  Zx8-kq2LmN0pQr7sTuv1 ") == "Zx8-kq2LmN0pQr7sTuv1"


# ------------------------------------------------------------------------------------ uploads


def _flac(rate: int, channels: int, seconds: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(rate * seconds), channels), np.float32), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def test_the_header_is_judged_before_decoding():
    assert check_header(22050, 1, 22050) == 30 * 22050
    assert check_header(48000, 2, 48000) == UPLOAD_MAX_SAMPLES // 2
    for rate, ch, frames, figure in ((UPLOAD_MAX_RATE + 1, 1, 10, "Hz"), (22050, UPLOAD_MAX_CHANNELS + 1, 10, "channels"),
                                     (22050, 1, 31 * 22050, "s long"), (96000, 2, 29 * 96000, "samples")):
        with pytest.raises(UploadError) as err:
            check_header(rate, ch, frames)
        assert figure in str(err.value)


def test_the_review_flac_bomb_is_refused_without_decoding():
    data = _flac(655_350, 8, 1.0)
    assert len(data) < 20_000  # a few kB that decode to 40 MiB
    with pytest.raises(UploadError) as err:
        check_clip(data)
    assert err.value.code == "too_large" and "655350 Hz" in str(err.value)
    with pytest.raises(UploadError, match="channels"):
        check_clip(_flac(22050, 8, 0.5))


def test_fits_are_found_by_their_full_id_only():
    edge = FitEdge(SimpleNamespace(library=None), None)
    fit = Fit("a" * 32, "take", None, False, None, 10, job_id="b" * 32)
    edge.fits[fit.key] = fit
    assert edge._find("a" * 32) is fit and edge._find("b" * 32) is fit
    assert edge._find("a" * 31) is None and edge._find("a") is None
    me, other = SimpleNamespace(id="ws1"), SimpleNamespace(id="ws2")
    fit.client = me
    assert not FitEdge._held_by_other(fit, me) and FitEdge._held_by_other(fit, other)
    fit.client = None  # its page left: whoever holds the full id may follow it again
    assert not FitEdge._held_by_other(fit, other)


# ------------------------------------------------------------------------------------ web


class _Boom(WebServer):
    def _route(self, path):  # a route that fails inside: what a 500 may say
        raise RuntimeError("secret detail /etc/sensorsynth/key.pem")


def test_a_500_says_nothing_of_the_exception_and_logs_once(caplog):
    web = _Boom(SimpleNamespace(library=None), Rejections(), access=AccessPolicy.for_host("127.0.0.1", None))
    conn = SimpleNamespace(remote_address=("127.0.0.1", 5))
    req = Request("/health", Headers([("Host", "127.0.0.1:8765")]))
    for _ in range(3):
        res = web._http(conn, req)
        assert res.status_code == 500 and b"secret" not in res.body and b"internal error" in res.body
        assert res.headers["Content-Security-Policy"] == CSP
    assert web.rejections.counts["http:internal"] == 3
    logged = [r for r in caplog.records if "secret detail" in r.getMessage() + (r.exc_text or "")]
    assert len(logged) == 1, "the traceback is logged once; the same fault again is only counted"


def test_rebinding_and_duplicates_never_reach_a_route():
    web = _Boom(SimpleNamespace(library=None), Rejections(), access=AccessPolicy.for_host("127.0.0.1", None))
    conn = SimpleNamespace(remote_address=("127.0.0.1", 5))
    res = web._http(conn, Request("/health", Headers([("Host", "rebind.example:8765")])))
    assert res.status_code == 403
    res = web._http(conn, Request("/health", Headers([("Host", "127.0.0.1"), ("Host", "127.0.0.1")])))
    assert res.status_code == 400 and web.rejections.counts["http:duplicate_header"] == 1


def test_the_hello_deadline_closes_only_silent_connections():
    closed: list[tuple[int, str]] = []

    class Conn:
        remote_address = ("127.0.0.1", 9)

        async def close(self, code, reason):
            closed.append((code, reason))

    async def run() -> None:
        web = WebServer(SimpleNamespace(library=None), Rejections(), WebLimits(hello_timeout_s=0.05),
                        AccessPolicy.for_host("127.0.0.1", None))
        from sensorsynth.server.web import Client

        silent, polite = Client("ws1", Conn(), ip="127.0.0.1"), Client("ws2", Conn(), ip="127.0.0.1", introduced=True)
        for c in (silent, polite):
            web.clients[c.id] = c
            c.hello_timer = asyncio.get_running_loop().call_later(0.05, web._no_hello, c)
        await asyncio.sleep(0.15)
        assert closed == [(1008, "say hello first")] and web.rejections.counts["ws:no_hello"] == 1

    asyncio.run(run())
