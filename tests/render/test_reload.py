"""Hot reload: add_instrument / replace_instrument while the renderer plays, from another thread too."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from sensorsynth.render import kernel as K
from sensorsynth.render.renderer import Renderer

from .instruments import fixed_noise, make_instrument

SMALL = dict(n_samples=2**14)
# every size differs from make_instrument's defaults, most of them larger (state arrays must grow)
BIG = dict(n_samples=2**14, control_plane_dim=24, n_resonances=20, expressivity=3, n_oscillators=40, attack_size=4096)


def play(r: Renderer, blocks: int, on_block=None, voices=(0, 1)) -> np.ndarray:
    """Blocks of r, with a control event every 4th block on each voice (sized for the voice's instrument)."""
    out = []
    for i in range(blocks):
        if on_block:
            on_block(i, r)
        if i % 4 == 0:
            for v in voices:
                k = r.instruments[r.voice_instrument(v)].spec.control_plane_dim
                r.control(r.time + 17 + 5 * v, v, np.linspace(0.1, 0.4, k))
        out.append(r.process().copy())
    return np.concatenate(out)


@pytest.mark.parametrize("new_kwargs", [SMALL, BIG], ids=["same-sizes", "larger-sizes"])
def test_replace_cross_fades_exactly_like_set_instrument(new_kwargs):
    """Replacing instrument 1 while voice 1 plays it sounds exactly like switching voice 1 to the new version
    with set_instrument; voice 0, on instrument 0, goes on untouched."""
    a, old, new = make_instrument(0, **SMALL), make_instrument(1, **SMALL), make_instrument(3, **new_kwargs)
    reloaded = Renderer([a, old], block_size=64, max_voices=2, seed=2, voice_instruments=[0, 1])
    switched = Renderer([a, old, new], block_size=64, max_voices=2, seed=2, voice_instruments=[0, 1])
    out_r = play(reloaded, 120, lambda i, r: i == 60 and r.replace_instrument(1, new))
    out_s = play(switched, 120, lambda i, r: i == 60 and r.set_instrument(1, 2))
    assert np.abs(out_r).max() > 0.1
    np.testing.assert_array_equal(out_r, out_s)
    assert reloaded.instruments[1] is new and reloaded.voice_instrument(1) == 1
    assert reloaded._fixed.views["vmeta"][reloaded.max_voices + 1, K.V_INST] == K.NO_INSTRUMENT  # tail done


@pytest.mark.parametrize("new_kwargs", [SMALL, BIG], ids=["same-sizes", "larger-sizes"])
def test_other_voices_keep_their_state_bit_exactly(new_kwargs):
    a, old, new = make_instrument(0, **SMALL), make_instrument(1, **SMALL), make_instrument(3, **new_kwargs)
    base = Renderer([a, old], block_size=64, max_voices=3, seed=2, voice_instruments=[0, 1, 0])
    reloaded = Renderer([a, old], block_size=64, max_voices=3, seed=2, voice_instruments=[0, 1, 0])

    def reload(i, r):
        if i == 40:
            r.replace_instrument(1, new)  # voice 1 plays it, silently: its cross-fade is silent
        if i == 70:
            r.replace_instrument(1, old)  # and back

    plain = play(base, 120, voices=(0, 2))
    out = play(reloaded, 120, reload, voices=(0, 2))
    assert np.abs(plain).max() > 0.1
    np.testing.assert_array_equal(out, plain)


def test_replace_while_ringing_has_no_click_and_the_old_tail_rings_out():
    a = make_instrument(0, **SMALL)
    louder = dataclasses.replace(a, gains=a.gains * 1.5)
    fade = round(0.02 * 22050)
    plain_r = Renderer(a, block_size=64, seed=1, crossfade_ms=20, limit=None)
    reload_r = Renderer(a, block_size=64, seed=1, crossfade_ms=20, limit=None)
    for r in (plain_r, reload_r):
        r.control(0, 0, np.full(16, 0.6))  # one strike, then it rings
    swap = 16 * 64
    plain = plain_r.render(swap + 4 * fade)
    head = reload_r.render(swap)
    reload_r.replace_instrument(0, louder)
    tail = reload_r.render(4 * fade)
    out = np.concatenate([head, tail])
    np.testing.assert_array_equal(head, plain[:swap])
    ring = plain[swap : swap + fade]
    assert np.abs(ring).max() > 0.02  # still ringing at the swap
    # the old sound fades out linearly over the cross-fade (the new version starts silent: no event)
    gain = 1 - np.arange(1, fade + 1) / fade
    np.testing.assert_allclose(out[swap : swap + fade], ring * gain, atol=1e-4)  # float32 ramp
    assert np.abs(np.diff(out)).max() <= np.abs(np.diff(plain)).max() + 1e-6  # no click
    assert np.all(out[swap + fade :] == 0)  # then only the new, silent, version: the tail was released
    assert np.all(reload_r._fixed.views["vmeta"][reload_r.max_voices :, K.V_INST] == K.NO_INSTRUMENT)
    reload_r.control(reload_r.time, 0, np.full(16, 0.6))
    assert np.abs(reload_r.render(2048)).max() > 0  # the new version plays


@pytest.mark.parametrize("via_inbox", [False, True])
def test_add_then_select(via_inbox):
    a, b = make_instrument(0, **SMALL), make_instrument(3, **BIG)
    grown = Renderer(a, block_size=64, max_voices=2, seed=6)
    both = Renderer([a, b], block_size=64, max_voices=2, seed=6)

    def select(i, r):
        if i != 30:
            return
        if r is both:
            r.set_instrument(1, 1)
        elif via_inbox:
            assert r.inbox.instrument(1, r.add_instrument(b))
        else:
            assert r.add_instrument(b) == 1
            r.set_instrument(1, 1)

    np.testing.assert_array_equal(play(grown, 100, select), play(both, 100, select))
    assert grown.voice_instrument(1) == 1 and len(grown.instruments) == 2


def test_inbox_message_waits_for_the_bank_it_was_validated_against():
    """An inbox message that names an instrument the audio thread has not installed yet is held back until
    it is, never applied to the wrong instrument or dropped (the race: the producer adds an instrument and
    selects it between the audio thread's reload check and its inbox drain)."""
    a, b = make_instrument(0, **SMALL), make_instrument(3, **BIG)
    r = Renderer(a, block_size=64, seed=0)
    installed = r._bank
    index = r.add_instrument(b)
    assert r.inbox.instrument(0, index) and r.inbox.control(r.time + 3, 0, np.full(24, 0.5))
    r._posted, posted = installed, r._posted  # as if the audio thread checked before the post landed
    r.process()
    assert r.inbox.waiting == 2 and r.voice_instrument(0) == 0
    r._posted = posted
    r.process()
    assert r.inbox.waiting == 0 and r.voice_instrument(0) == 1 and r.counters["events"] == 1
    assert r.counters["mismatched"] == 0


def test_reload_from_another_thread_while_the_audio_thread_plays():
    a = make_instrument(0, **SMALL)
    versions = [make_instrument(s, **kw) for s, kw in ((1, SMALL), (3, BIG), (4, SMALL))]
    r = Renderer(a, block_size=64, max_voices=2, seed=0)
    r.warmup()
    stop = threading.Event()
    errors: list[BaseException] = []
    blocks: list[np.ndarray] = []

    def audio() -> None:
        try:
            while not stop.is_set():
                blocks.append(r.process().copy())
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    thread = threading.Thread(target=audio)
    thread.start()
    try:
        index = r.add_instrument(versions[0])
        for n, inst in enumerate(versions * 3):
            r.replace_instrument(index, inst)
            k = inst.spec.control_plane_dim
            assert r.inbox.instrument(n % 2, index)
            r.inbox.control(r.time + 64, n % 2, np.full(k, 0.4))
            for _ in range(20):  # a few blocks' worth
                if stop.wait(0.001):
                    break
    finally:
        stop.set()
        thread.join()
    assert not errors
    out = np.concatenate(blocks)
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 0
    r.render(64 * 50)  # install the last version, let every tail finish
    assert r.voice_instrument(1) == index and r.instruments[index] is versions[-1]
    # old versions no tail plays any more are dropped at the next reload, not kept forever
    r.replace_instrument(index, versions[0])
    assert len(r._posted.entries) <= len(r.instruments) + 2
    assert r.counters["resets"] == 0


def test_reload_refuses_what_it_cannot_play():
    a = make_instrument(0, **SMALL)
    r = Renderer(a, block_size=64, seed=0)
    with pytest.raises(ValueError):
        r.replace_instrument(1, a)
    with pytest.raises(ValueError):
        r.add_instrument("guitar.instrument")
    with pytest.raises(ValueError):
        r.replace_instrument(True, a)
    fixed = Renderer(a, block_size=64, noise=fixed_noise(a, 22050))
    with pytest.raises(ValueError, match="fixed noise"):  # no noise for 24 control dimensions
        fixed.add_instrument(make_instrument(3, **BIG))
    assert len(fixed.instruments) == 1 and fixed._posted is fixed._bank
