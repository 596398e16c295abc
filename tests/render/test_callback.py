"""The compiled audio path (sensorsynth/render/callback.py): the PortAudio callback renders the renderer's blocks
itself, the null output is a compiled clock-paced loop, hot reloads are installed under an ownership word.

The callback is driven here exactly as PortAudio drives it (its C entry point, any frame count, through
ctypes), and compared with ``Renderer.process`` on a twin renderer: same seed, same events, same output."""

from __future__ import annotations

import ctypes
import re
import threading
import time

import numpy as np
import pytest
from numba import cfunc

from sensorsynth.render import callback as CB
from sensorsynth.render import kernel as K
from sensorsynth.render.renderer import Renderer

from .instruments import make_instrument

SMALL = dict(n_samples=2**14)
BIG = dict(n_samples=2**14, control_plane_dim=24, n_resonances=20, expressivity=3, n_oscillators=40, attack_size=4096)
B = 64


class Card:
    """Calls the compiled callback as PortAudio would: its C entry point, a device buffer, a frame count."""

    def __init__(self, path: CB.AudioPath) -> None:
        self.path = path
        self.fn = CB.portaudio_callback().ctypes

    def pull(self, frames: int, status: int = 0) -> np.ndarray:
        out = np.full(frames, np.nan, np.float32)
        assert self.fn(None, out.ctypes.data, frames, None, status, self.path.userdata) == 0
        return out


def twins(instruments, **kwargs) -> tuple[Renderer, Renderer]:
    kwargs = {"block_size": B, "seed": 5, **kwargs}
    return Renderer(instruments, **kwargs), Renderer(instruments, **kwargs)


def future_events(seed: int, n: int, horizon: int, voices: int, k: int = 16, start: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for t in np.sort(rng.integers(start, horizon, n)):
        v = int(rng.integers(0, voices))
        if rng.uniform() < 0.2:
            out.append(("deform", int(t), v, rng.normal(size=2)))
        else:
            out.append(("control", int(t), v, (rng.uniform(0, 0.7, k) * (rng.uniform(size=k) < 0.5))))
    return out


def post(inbox, event) -> None:
    kind, t, v, payload = event
    assert (inbox.control if kind == "control" else inbox.deform)(t, v, payload)


def tapped(path: CB.AudioPath) -> tuple[np.ndarray, np.ndarray]:
    samples, meta = [], []
    while True:
        n = path.read()
        samples.append(path.tap_samples[:n].copy())
        meta.append(path.tap_meta[:n].copy())
        if n < path.tap_samples.shape[0]:
            return np.concatenate(samples), np.concatenate(meta)


@pytest.mark.parametrize("frames", [[64], [256], [17, 100, 1, 300, 64, 128, 5, 63, 65]], ids=["64", "256", "mixed"])
def test_the_callback_plays_exactly_what_process_plays(frames):
    """Events (queued ahead), deformations, a gain and an instrument change through the inbox: the device
    buffers the callback fills, for any frame counts, are bit-identical to Renderer.process's blocks, and so
    is every block it taps; its time is the renderer's time."""
    a, b = make_instrument(0, **SMALL), make_instrument(1, **SMALL)
    live, ref = twins([a, b], max_voices=3)
    events = future_events(1, 150, 110 * B, voices=3)
    for e in events:
        post(live.inbox, e)
        post(ref.inbox, e)
    path = CB.AudioPath(live)
    card = Card(path)
    messages: dict[int, list] = {}  # block count when posted → messages (the reference posts them there)
    played = []
    pulls = 0
    while path.counters()["blocks"] < 120:
        f = frames[pulls % len(frames)]
        played.append(card.pull(f))
        pulls += 1
        assert live.time == path.counters()["blocks"] * B  # renderer.time reads the audio side's clock
        blocks = path.counters()["blocks"]
        if 40 <= blocks and "gain" not in str(messages):
            assert live.inbox.gain(1, 0.3, ramp_ms=3.0)
            messages.setdefault(blocks, []).append(("gain", 1, 0.3))
        if 70 <= blocks and "instrument" not in str(messages):
            assert live.inbox.instrument(0, 1)
            messages.setdefault(blocks, []).append(("instrument", 0, 1))
    out = np.concatenate(played)
    expected = []
    for n in range(path.counters()["blocks"]):
        for kind, v, x in messages.get(n, []):
            assert ref.inbox.gain(v, x, ramp_ms=3.0) if kind == "gain" else ref.inbox.instrument(v, x)
        expected.append(ref.process().copy())
    expected = np.concatenate(expected)
    assert np.abs(out).max() > 0.1
    np.testing.assert_array_equal(out, expected[: out.size])
    samples, meta = tapped(path)
    np.testing.assert_array_equal(samples.reshape(-1), expected)
    np.testing.assert_array_equal(meta[:, CB.TM_FIRST], np.arange(meta.shape[0]) * B)
    assert np.all(meta[:, CB.TM_KIND] == CB.TAP_RENDERED) and np.all(np.diff(meta[:, CB.TM_NS]) >= 0)
    c = path.counters()
    assert c["callbacks"] == pulls and c["frames"] == out.size and c["underruns"] == 0 and c["tap_dropped"] == 0
    assert live.counters == ref.counters and live.counters["events"] == len(events)
    assert path.hist.sum() == pulls and c["callback_max_us"] > 0


def _play_with_reload(r: Renderer, pull, reload_at: int, reload, blocks: int = 120) -> np.ndarray:
    """Blocks of r through ``pull`` with a control event every 4th block on voices 0 and 1 (sized for what each
    voice will play), and ``reload`` at block ``reload_at``."""
    out = []
    for i in range(blocks):
        if i == reload_at:
            reload(r)
        if i % 4 == 0:
            for v in (0, 1):
                k = r.instruments[r.inbox._voice_instrument[v]].spec.control_plane_dim
                assert r.inbox.control(r.time + 17 + 5 * v, v, np.linspace(0.1, 0.4, k))
        out.append(pull())
    return np.concatenate(out)


@pytest.mark.parametrize("new_kwargs", [SMALL, BIG], ids=["same-sizes", "larger-sizes"])
def test_a_reload_installed_under_the_ownership_word_is_exactly_a_reload_in_process(new_kwargs):
    """replace_instrument while the callback plays: the supervisor's compiled install (renumbered rows, state
    moved into larger arrays, the replaced voice cross-faded by the kernel's own message) sounds bit-identical
    to the install Renderer.process does at its next block."""
    a, old, new = make_instrument(0, **SMALL), make_instrument(1, **SMALL), make_instrument(3, **new_kwargs)
    live, ref = twins([a, old], max_voices=2, voice_instruments=[0, 1])
    path = CB.AudioPath(live)
    card = Card(path)

    def reload_live(r):
        r.replace_instrument(1, new)
        assert path.sync()

    out = _play_with_reload(live, lambda: card.pull(B), 60, reload_live)
    expected = _play_with_reload(ref, lambda: ref.process().copy(), 60, lambda r: r.replace_instrument(1, new))
    assert np.abs(out).max() > 0.1
    np.testing.assert_array_equal(out, expected)
    c = path.counters()
    assert c["reloads"] == 1 and c["underruns"] == 0 and not path.sync()
    assert live.installed is live.posted and live.instruments[1] is new and live.voice_instrument(1) == 1
    assert live._fixed.views["vmeta"][live.max_voices + 1, K.V_INST] == K.NO_INSTRUMENT  # the tail rang out
    assert live.counters == ref.counters


def test_a_message_for_an_instrument_not_installed_yet_waits_for_the_supervisor():
    """add_instrument + inbox.instrument while playing: until the supervisor installs the new bank, the
    callback holds the message back (never applied to the wrong instrument, never dropped)."""
    a, b = make_instrument(0, **SMALL), make_instrument(3, **BIG)
    live = Renderer(a, block_size=B, max_voices=2, seed=0)
    path = CB.AudioPath(live)
    card = Card(path)
    card.pull(B)
    index = live.add_instrument(b)
    assert live.inbox.instrument(1, index) and live.inbox.control(live.time + 3, 1, np.full(24, 0.5))
    card.pull(B)
    assert live.inbox.waiting == 2 and live.voice_instrument(1) == 0
    assert path.sync()
    quiet_until = live.time
    out = np.concatenate([card.pull(B) for _ in range(40)])
    assert live.inbox.waiting == 0 and live.voice_instrument(1) == index
    assert live.counters["events"] == 1 and live.counters["mismatched"] == 0 and np.abs(out).max() > 0
    assert quiet_until <= live.time - 40 * B


def test_a_callback_that_cannot_own_the_renderer_fades_out_counts_and_fades_back_in():
    a = make_instrument(0, **SMALL)
    live, ref = twins(a)
    for r in (live, ref):
        assert r.inbox.control(0, 0, np.full(16, 0.6))
    path = CB.AudioPath(live, spin_us=50)
    card = Card(path)
    for _ in range(6):
        np.testing.assert_array_equal(card.pull(B), ref.process())
    last = card.pull(B)[-1]
    ref.process()
    assert abs(last) > 1e-3
    assert CB.take_renderer(path.ctl, 10**9)  # the supervisor holds the renderer
    t = live.time
    t0 = time.perf_counter()
    faded = card.pull(B)
    assert time.perf_counter() - t0 >= 50e-6  # it waited its spin first
    np.testing.assert_allclose(faded, last * (B - 1 - np.arange(B)) / B, rtol=1e-6)
    silent = card.pull(B)
    assert np.all(silent == 0) and live.time == t
    c = path.counters()
    assert c["not_rendered"] == 2 and c["underruns"] == 2 and c["contended"] == 2
    CB.give_back(path.ctl)
    back = card.pull(B)  # the renderer continues where it was, fading in
    np.testing.assert_allclose(back, ref.process() * np.arange(1, B + 1) / B, rtol=1e-6)
    np.testing.assert_array_equal(card.pull(B), ref.process())
    samples, meta = tapped(path)
    kinds = meta[:, CB.TM_KIND]
    assert list(kinds[-4:]) == [CB.TAP_NOT_RENDERED, CB.TAP_NOT_RENDERED, CB.TAP_RENDERED, CB.TAP_RENDERED]
    np.testing.assert_array_equal(samples[-4:].reshape(-1), np.concatenate([faded, silent, back, samples[-1]]))


def test_device_underflow_flags_are_under_runs():
    path = CB.AudioPath(Renderer(make_instrument(0, **SMALL), block_size=B, seed=0))
    card = Card(path)
    card.pull(B, status=CB.PA_OUTPUT_UNDERFLOW)
    card.pull(B, status=0x10)  # priming output: a flag, not an under-run
    c = path.counters()
    assert c["device_underflow"] == 1 and c["underruns"] == 1 and c["status_flags"] == 2 and c["not_rendered"] == 0


def test_detach_gives_a_plain_renderer_back():
    live, ref = twins(make_instrument(0, **SMALL))
    for r in (live, ref):
        assert r.inbox.control(100, 0, np.full(16, 0.5))
    path = CB.AudioPath(live)
    out = np.concatenate([Card(path).pull(B) for _ in range(10)])
    path.detach()
    path.ctl[CB.C_TIME] = 0
    assert live.time == 10 * B  # its own clock again, not the path's
    np.testing.assert_array_equal(np.concatenate([out, live.render(20 * B)]), ref.render(30 * B))


@pytest.mark.slow
def test_the_null_output_is_paced_by_the_clock_and_plays_exactly_what_process_plays():
    """The compiled null loop on its own thread for about 1.5 s, 8 voices: the tap holds exactly
    Renderer.process's blocks, in order, one per due time; meanwhile renderer.time advances (read from here)."""
    live, ref = twins(make_instrument(0, **SMALL), max_voices=8)
    rate = live.sample_rate
    events = future_events(2, 400, int(1.6 * rate), voices=8, start=2 * B)
    for e in events:
        post(live.inbox, e)
        post(ref.inbox, e)
    path = CB.AudioPath(live)
    thread = threading.Thread(target=path.run_null)
    t0 = time.monotonic()
    thread.start()
    seen = []
    chunks = []
    while time.monotonic() - t0 < 1.5:
        time.sleep(0.05)
        seen.append(live.time)
        chunks.append(tapped(path))
    path.stop_null()
    thread.join(5)
    elapsed = time.monotonic() - t0
    assert not thread.is_alive()
    chunks.append(tapped(path))
    samples = np.concatenate([s for s, _ in chunks]).reshape(-1)
    meta = np.concatenate([m for _, m in chunks])
    assert np.all(np.diff(seen) >= 0) and seen[-1] > seen[0]
    np.testing.assert_array_equal(samples, ref.render(samples.size))
    assert np.abs(samples).max() > 0.1 and live.counters["events"] > 0
    np.testing.assert_array_equal(meta[:, CB.TM_FIRST], np.arange(meta.shape[0]) * B)
    c = path.counters()
    assert c["blocks"] == c["callbacks"] == meta.shape[0]
    assert 0.8 < c["frames"] / rate / elapsed < 1.1, (c, elapsed)  # paced: about one second of audio per second
    due = path.null_start_ns + meta[:, CB.TM_FIRST] * 1_000_000_000 // rate
    assert np.all(meta[:, CB.TM_NS] >= due)  # never rendered before it was due


def test_the_null_output_keeps_playing_while_python_holds_the_gil():
    """Three 200 ms stretches in which this thread holds the GIL inside C (PyDLL's usleep): the compiled null
    loop renders its ~69 blocks in each anyway."""
    live = Renderer(make_instrument(0, **SMALL), block_size=B, seed=0, max_voices=8)
    path = CB.AudioPath(live)
    thread = threading.Thread(target=path.run_null)
    thread.start()
    usleep = ctypes.PyDLL(None).usleep
    usleep.argtypes = [ctypes.c_uint]
    holds = []
    try:
        time.sleep(0.1)
        for _ in range(3):
            start = time.monotonic_ns()
            usleep(200_000)  # the GIL stays held: PyDLL does not release it
            holds.append((start, time.monotonic_ns()))
            time.sleep(0.05)
    finally:
        path.stop_null()
        thread.join(5)
    _, meta = tapped(path)
    per_block = B / live.sample_rate * 1e9
    for start, end in holds:
        during = np.count_nonzero((meta[:, CB.TM_NS] > start) & (meta[:, CB.TM_NS] < end))
        assert during >= 0.8 * (end - start) / per_block, (during, (end - start) / per_block)


def test_reloads_race_with_a_callback_thread():
    """A thread pulls blocks through the C entry point (ctypes drops the GIL) while this one replaces the
    instrument 24 times, growing and shrinking sizes, and installs each reload: nothing breaks, every reload
    lands, and a block goes unrendered only when an install outlasted the callback's wait (counted, shown)."""
    a = make_instrument(0, **SMALL)
    versions = [make_instrument(s, **kw) for s, kw in ((1, SMALL), (3, BIG), (4, SMALL))]
    live = Renderer(a, block_size=B, max_voices=2, seed=0)
    path = CB.AudioPath(live)
    card = Card(path)
    stop = threading.Event()
    blocks: list[np.ndarray] = []

    def audio() -> None:
        while not stop.is_set():
            blocks.append(card.pull(B))
            time.sleep(0.0005)

    thread = threading.Thread(target=audio)
    thread.start()
    try:
        index = live.add_instrument(versions[0])
        assert path.sync()
        for n, inst in enumerate(versions * 8):
            live.replace_instrument(index, inst)
            assert path.sync()
            assert live.inbox.instrument(n % 2, index)
            live.inbox.control(live.time + 64, n % 2, np.full(inst.spec.control_plane_dim, 0.4))
            time.sleep(0.004)
    finally:
        stop.set()
        thread.join()
    out = np.concatenate(blocks)
    c = path.counters()
    print(f"\n24 reloads while playing: {c['contended']} callbacks waited (longest {c['wait_max_us']} µs), "
          f"{c['not_rendered']} not rendered, of {c['callbacks']}; longest install {c['install_max_us']} µs")
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 0
    assert c["reloads"] == 25 and live.installed is live.posted and live.instruments[index] is versions[-1]
    # a callback gives up only when an install held the renderer longer than it may wait (on a loaded machine: an
    # install that moved the state into larger arrays and cross-faded voices, or one the scheduler interrupted)
    assert c["not_rendered"] == 0 or c["install_max_us"] > c["spin_us"], c
    assert live.counters["resets"] == 0 and live.counters["mismatched"] == 0


@pytest.mark.slow
def test_the_callback_body_cannot_fail_and_calls_no_python():
    """The machine code of the callback's body (compiled here without the cache, to inspect it): it returns
    the constant status 0 (numba's error path, the only place that would take the GIL, is never reached) and
    calls no Python C-API, GIL or allocator function."""
    fresh = cfunc(CB._CALLBACK_SIG, nopython=True, error_model="numpy")(CB._portaudio_render_callback)
    llvm_ir = fresh.inspect_llvm()
    functions = {re.match(r'[^@]*@"?([\w.$]+)', f).group(1): f for f in llvm_ir.split("\ndefine ")[1:]}
    body = [f for name, f in functions.items() if "_portaudio_render_callback" in name and not name.startswith("cfunc.")]
    assert len(body) == 1
    returns = {line.strip() for line in body[0].splitlines() if line.strip().startswith("ret ")}
    assert returns == {"ret i32 0"}, returns
    called = set(re.findall(r"call [^@\n]*@\"?([\w.]+)", body[0]))
    assert not {f for f in called if f.startswith(("Py", "numba_", "NRT_", "malloc", "free"))}, called


def test_the_rendering_thread_asks_for_realtime_once_and_leaves_a_realtime_host_thread_alone():
    """With realtime_priority, the thread that renders asks for SCHED_FIFO at its first block (the callback
    thread is the host's: PortAudio's or JACK's); a thread the host already runs realtime keeps its priority."""
    import os

    out = {}

    def first_block(path, pre_priority):
        try:
            if pre_priority:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(pre_priority))
            Card(path).pull(B)
            out["policy"] = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
        except PermissionError:
            out["policy"] = None

    for pre, expected in ((0, "SCHED_FIFO 7"), (30, "realtime already")):
        path = CB.AudioPath(Renderer(make_instrument(0, **SMALL), block_size=B, seed=0), realtime_priority=7)
        assert path.priority == "not started"
        thread = threading.Thread(target=first_block, args=(path, pre))
        thread.start()
        thread.join()
        if out["policy"] is None or path.priority.startswith("normal"):
            pytest.skip("this process may not use SCHED_FIFO")
        assert path.priority.startswith(expected)
        assert out["policy"] == (os.SCHED_FIFO, 7 if pre == 0 else pre)


def test_the_control_block_is_generated_from_its_table_and_every_slot_is_read():
    """The C_* offsets are the table's, in order and without gaps (the buffers' pairs last, sized by
    kernel.BUFFERS); the tap meta columns likewise; and every slot is read somewhere in the module (by the audio
    side, the supervisor or AudioPath; the tap's columns by the server's driver): a slot only ever written is dead
    weight in the audio side's cache."""
    import inspect

    from sensorsynth.server import driver

    offsets = [getattr(CB, f"C_{s.name}") for s in CB.CONTROL]
    widths = [s.width for s in CB.CONTROL]
    assert offsets == [sum(widths[:i]) for i in range(len(widths))] and CB.N_CTL == sum(widths)
    assert CB.CONTROL[-1].name == "BUF" and CB.CONTROL[-1].width == 2 * len(K.BUFFERS)
    assert [getattr(CB, f"TM_{s.name}") for s in CB.TAP_META] == list(range(CB.N_TAP_META))
    assert [getattr(CB, f"K_{n}") for n in CB.INSTALL_CONSTS] == list(range(CB.N_CONSTS))
    for prefix, table, source in (("C_", CB.CONTROL, inspect.getsource(CB)),
                                  ("TM_", CB.TAP_META, inspect.getsource(CB) + inspect.getsource(driver))):
        for slot in table:
            name = prefix + slot.name
            reads = []
            for line in source.splitlines():
                if not re.search(rf"\b{name}\b", line):
                    continue
                left, eq, _ = re.sub(r"[=!<>]=|\+=|-=", "~~", line).partition(" = ")
                if not eq or not re.search(rf"\b{name}\b", left):
                    reads.append(line)
            assert reads, f"{name} is written but never read"
    # a sized field the kernel adds must get a migration rule (no rule from docstring text)
    assert set(CB.MIGRATION) == {f.name for f in K.FIELDS if f.group == "sized"}


@pytest.mark.parametrize("frames", [[64], [17, 100, 1, 300, 5, 63]], ids=["64", "mixed"])
def test_the_callback_interleaves_every_output_channel(frames):
    """Three channels, voices placed on each: the device buffer holds interleaved frames, bit-identical to
    Renderer.process's (channels, B) blocks, for any frame counts; the tap holds the same frames."""
    a = make_instrument(0, **SMALL)
    pans = [[1, 0, 0], [0, 1, 0], [0.6, 0, 0.8]]
    live, ref = twins([a], max_voices=3, channels=3, voice_pans=pans)
    for e in future_events(2, 120, 60 * B, voices=3):
        post(live.inbox, e)
        post(ref.inbox, e)
    path = CB.AudioPath(live)
    assert path.channels == 3
    fn = CB.portaudio_callback().ctypes
    played = []
    pulls = 0
    while path.counters()["blocks"] < 64:
        f = frames[pulls % len(frames)]
        buf = np.full(3 * f, np.nan, np.float32)
        assert fn(None, buf.ctypes.data, f, None, 0, path.userdata) == 0
        played.append(buf.reshape(f, 3))
        pulls += 1
    out = np.concatenate(played)
    expected = np.concatenate([ref.process().T.copy() for _ in range(path.counters()["blocks"])])
    assert np.abs(out).max() > 0.05 and all(np.abs(out[:, c]).max() > 0.01 for c in range(3))
    np.testing.assert_array_equal(out, expected[: out.shape[0]])
    samples, meta = tapped(path)
    assert np.all(meta[:, CB.TM_LEN] == B)
    np.testing.assert_array_equal(samples.reshape(-1, 3), expected[: samples.shape[0] * B])
