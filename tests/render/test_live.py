"""The renderer in a live threaded host: the inbox from another thread, the GIL released, warm-up."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from sensorsynth.render import kernel as K
from sensorsynth.render.renderer import Renderer

from .instruments import make_instrument

SMALL = dict(n_samples=2**14)


def events(seed: int, n: int, horizon: int, k: int = 16, e: int = 2, voices: int = 2):
    """n random (kind, time, voice, payload) sorted by time: controls, and deformations now and then."""
    rng = np.random.default_rng(seed)
    out = []
    for t in np.sort(rng.integers(0, horizon, n)):
        voice = int(rng.integers(0, voices))
        if rng.uniform() < 0.25:
            out.append(("deform", int(t), voice, rng.normal(size=e), bool(rng.uniform() < 0.3)))
        else:
            out.append(("control", int(t), voice, rng.uniform(0, 0.6, k) * (rng.uniform(size=k) < 0.4), False))
    return out


def post(target, event) -> bool:
    kind, t, voice, payload, now = event
    if kind == "control":
        return target.control(t, voice, payload)
    return target.deform(t, voice, payload, immediate=now)


def test_inbox_renders_bit_identically_to_direct_calls():
    """Events, gains and instrument swaps through the inbox sound exactly as the same calls made directly."""
    a, b = make_instrument(0, **SMALL), make_instrument(1, **SMALL)
    block = 64
    evs = events(1, 120, 90 * block)
    outs = []
    for via_inbox in (False, True):
        r = Renderer([a, b], block_size=block, max_voices=2, seed=9)
        target = r.inbox if via_inbox else r
        blocks = []
        i = 0
        for n in range(100):
            end = r.time + block
            while i < len(evs) and evs[i][1] < end:  # schedule each event just before its block
                assert post(target, evs[i])
                i += 1
            if n == 30 and via_inbox:
                assert r.inbox.gain(1, 0.25, ramp_ms=2.0)
            elif n == 30:
                r.set_gain(1, 0.25, ramp_ms=2.0)
            if n == 50 and via_inbox:
                assert r.inbox.instrument(0, 1)
            elif n == 50:
                r.set_instrument(0, 1)
            blocks.append(r.process().copy())
        outs.append((np.concatenate(blocks), r.counters))
    (direct, c_direct), (inbox, c_inbox) = outs
    assert np.abs(direct).max() > 0.1
    np.testing.assert_array_equal(inbox, direct)
    assert c_inbox == c_direct and c_inbox["events"] == len(evs) and c_inbox["inbox_full"] == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda x: x.control(0, 0, np.ones(15)),
        lambda x: x.control(0, 0, -np.ones(16)),
        lambda x: x.control(-1, 0, np.ones(16)),
        lambda x: x.control(0, 2, np.ones(16)),
        lambda x: x.deform(0, 0, [np.nan, 0.0]),
        lambda x: x.deform(0, 0, [1.0]),
        lambda x: x.gain(0, -1.0),
        lambda x: x.gain(0, 1.0, ramp_ms=np.nan),
        lambda x: x.gain(7, 1.0),
        lambda x: x.instrument(0, 1),
        lambda x: x.instrument(0, True),
    ],
)
def test_inbox_validates_on_the_producer_side(call):
    r = Renderer(make_instrument(0, **SMALL), block_size=64, max_voices=2, seed=0)
    with pytest.raises(ValueError):
        call(r.inbox)
    assert r.inbox.waiting == 0


def test_full_inbox_refuses_and_counts():
    r = Renderer(make_instrument(0, **SMALL), block_size=64, seed=0, inbox_size=4)
    v = np.full(16, 0.2)
    assert [r.inbox.control(t, 0, v) for t in range(0, 600, 100)] == [True] * 4 + [False] * 2
    assert r.counters["inbox_full"] == 2 and r.inbox.waiting == 4 and r.pending == 0
    r.process()
    assert r.inbox.waiting == 0 and r.pending == 3  # drained into the queue; the first one played
    assert r.inbox.control(r.time, 0, v)  # room again
    r.render(640)
    assert r.counters["events"] == 5


def test_inbox_validates_against_the_instrument_the_voice_will_play():
    a = make_instrument(0, **SMALL)
    b = make_instrument(2, n_samples=2**14, control_plane_dim=8, expressivity=3)
    r = Renderer([a, b], block_size=64, seed=0)
    assert r.inbox.instrument(0, 1)
    with pytest.raises(ValueError):
        r.inbox.control(0, 0, np.ones(16))
    assert r.inbox.control(10, 0, np.full(8, 0.5)) and r.inbox.deform(10, 0, [1.0, 0.0, -1.0])
    out = r.render(2048)
    assert r.voice_instrument(0) == 1 and r.counters["events"] == 2 and r.counters["mismatched"] == 0
    assert np.abs(out).max() > 0


def test_threaded_producer_nothing_lost_nothing_late_unreported():
    """A producer thread hammers the inbox (a small one, so it fills) with events around the audio thread's
    current time while the audio thread processes blocks as fast as it can. Afterwards every event is
    accounted for (the audio thread stalls now and then, as a late audio callback would, so the inbox fills
    for certain), and a single-threaded replay that hands each block the events the audio thread drained
    before it renders bit-identically: every event played at its exact sample, or at the block start of the
    block that drained it, counted as late."""
    inst = make_instrument(0, **SMALL)
    block, n_blocks = 64, 600
    r = Renderer(inst, block_size=block, max_voices=2, seed=4, inbox_size=32)
    r.warmup()
    rng = np.random.default_rng(0)
    vectors = rng.uniform(0, 0.5, (64, 16)) * (rng.uniform(size=(64, 16)) < 0.3)
    logits = rng.normal(size=(64, 2))
    accepted: list[tuple] = []
    refused = 0
    done = threading.Event()

    def producer() -> None:
        nonlocal refused
        i = 0
        while not done.is_set():
            t = max(0, r.time + int(rng.integers(-block, 3 * block)))  # racy read of the audio clock: on purpose
            ev = (("deform", t, i % 2, logits[i % 64], i % 3 == 0) if i % 5 == 0 else
                  ("control", t, i % 2, vectors[i % 64], False))  # fmt: skip
            if post(r.inbox, ev):
                accepted.append(ev)
            else:
                refused += 1
            i += 1
            if i % 8 == 0:
                time.sleep(0)

    drained: list[int] = []  # inbox read index after each block (the audio thread's own index)
    blocks = []
    thread = threading.Thread(target=producer)
    thread.start()
    try:
        for n in range(n_blocks):
            blocks.append(r.process().copy())
            drained.append(int(r._fixed.views["inbox_state"][K.IB_READ]))
            if n % 50 == 25:
                time.sleep(0.005)
            if n == n_blocks - 20:
                done.set()
                thread.join()
    finally:
        done.set()
        thread.join()
    c = r.counters
    assert len(accepted) > 500 and refused > 0  # it really raced, and the inbox really filled
    assert drained[-1] == len(accepted)  # everything posted was taken
    assert c["inbox_full"] == refused
    assert c["events"] == len(accepted) and c["dropped"] == c["mismatched"] == 0

    replay = Renderer(inst, block_size=block, max_voices=2, seed=4)
    start = 0
    out = []
    for n in range(n_blocks):
        for ev in accepted[start : drained[n]]:
            assert post(replay, ev)
        start = drained[n]
        out.append(replay.process().copy())
    np.testing.assert_array_equal(np.concatenate(blocks), np.concatenate(out))
    assert replay.counters["late"] == c["late"] and replay.counters["events"] == c["events"]


def _main_runs_during(work) -> bool:
    """Whether the main thread gets to run Python while another thread loops on ``work`` for 0.4 s.

    The switch interval is raised to 30 s: a thread holding the GIL is then never asked to drop it within
    the test, so the main thread can only run while the other thread has released the GIL itself."""
    started = threading.Event()
    finished: list[float] = []

    def loop() -> None:
        started.set()
        deadline = time.perf_counter() + 0.4
        while time.perf_counter() < deadline:
            work()
        finished.append(time.perf_counter())

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        thread = threading.Thread(target=loop)
        thread.start()
        started.wait()
        ran_at = time.perf_counter()  # reached once this thread holds the GIL again
        thread.join()
    finally:
        sys.setswitchinterval(old)
    return ran_at < finished[0]


def test_process_releases_the_gil():
    """While the audio thread renders, other Python threads run: the compiled block releases the GIL. The
    same probe with a GIL-holding loop shows that the probe can tell the difference."""
    assert K.render_block.targetoptions["nogil"] is True
    inst = make_instrument(0, **SMALL)
    r = Renderer(inst, block_size=512, max_voices=4, seed=0)
    for v in range(4):
        r.control(0, v, np.full(16, 0.5))
    r.warmup()
    assert _main_runs_during(r.process)
    assert not _main_runs_during(lambda: sum(range(2000)))


def _scheduled(r: Renderer) -> None:
    v = np.linspace(0.1, 0.8, 16)
    r.control(10, 0, v)
    r.control(700, 1, v[::-1])
    r.deform(30, 0, [1.5, -0.5])
    r.set_gain(1, 0.5)


def test_warmup_leaves_the_renderer_exactly_as_it_was():
    inst = make_instrument(0, **SMALL)
    warm, cold = (Renderer(inst, block_size=64, max_voices=2, seed=3) for _ in range(2))
    for r in (warm, cold):
        _scheduled(r)
        r.render(640)  # mid-performance: ringing voices, a ramp in flight, a queued event
        _scheduled(r)
        r.inbox.control(r.time + 5, 1, np.full(16, 0.3))
    before = (warm.time, warm.counters, warm.pending, warm.inbox.waiting)
    warm.warmup()
    assert (warm.time, warm.counters, warm.pending, warm.inbox.waiting) == before
    np.testing.assert_array_equal(warm.render(4096), cold.render(4096))
    assert warm.counters == cold.counters


def test_a_warmed_renderer_plays_like_a_fresh_one():
    inst = make_instrument(0, **SMALL)
    warm, fresh = (Renderer(inst, block_size=100, seed=5) for _ in range(2))
    warm.warmup()
    for r in (warm, fresh):
        _scheduled(r)
    np.testing.assert_array_equal(warm.render(3000), fresh.render(3000))
