"""Applied events: one record of every command the engine applied, read by whoever listens (the WebSocket
``events`` push, the OSC feedback sender, the MIDI output), and the clock arithmetic that says when an event
sounds.

Why a log with subscriptions and not one queue: three readers want the same events at their own pace, and
each must lose only its own backlog when it falls behind. Each reader holds a :class:`Subscription` (a bounded
deque of its own); :meth:`EventLog.record` appends the event to every *active* subscription and counts a drop
where one is full. With nobody listening, ``record`` returns after one integer test, so the event path pays
nothing for the feature unless someone uses it (tests/benchmarks/feedback_cost.py measures both).

Threads: every writer and reader runs on the event loop's thread (the engine's :meth:`submit` is called there,
MIDI input is handed to the loop first), so the deques need no lock.

The clock: the engine knows the *sample* an event plays at; the driver reports each block that leaves the
renderer with its monotonic time (:class:`~sensorsynth.server.meter.Latency` keeps ``offset_ns``, the
monotonic time of sample 0 estimated from the least-delayed block). :func:`block_leaves_ns` turns a sample into
the time the block holding it leaves the renderer, :func:`mono_to_unix` a monotonic time into Unix seconds
(what an OSC time tag carries). Both are pure: clock readings are arguments.
"""

from __future__ import annotations

import collections
from typing import Callable, NamedTuple, Sequence

KINDS = ("control", "deform", "gain", "instrument")


class Applied(NamedTuple):
    """One applied command. ``values``: control: the K strengths (a float32 array or a tuple); deform: the E
    logits; gain: (gain,); instrument: (). ``name``: the instrument (instrument changes only)."""

    seq: int  # 1, 2, ... in the order applied
    sample: int  # the sample (renderer time) its first sample plays at
    voice: int
    kind: str  # one of KINDS
    values: Sequence[float]
    source: str  # "osc", "ws", "midi", or a mapping's "kind:source"
    name: str | None = None


class Subscription:
    """One reader's bounded backlog. ``wake`` (optional) is called when the backlog goes from empty to not
    empty, so a reader can schedule itself once per burst instead of polling."""

    def __init__(self, log: "EventLog", maxlen: int, wake: Callable[[], None] | None) -> None:
        self._log = log
        self.maxlen = int(maxlen)
        self.queue: collections.deque[Applied] = collections.deque()
        self.dropped = 0  # events this reader lost because its backlog was full
        self.wake = wake
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, on: bool) -> None:
        if bool(on) != self._active:
            self._active = bool(on)
            self._log._changed()
            if not on:
                self.queue.clear()

    def take(self) -> list[Applied]:
        """Everything recorded for this reader since the previous take, oldest first."""
        q = self.queue
        out = list(q)
        q.clear()
        return out

    def close(self) -> None:
        self.active = False
        self._log._subs.remove(self)


class EventLog:
    """Every applied command, fanned out to the active subscriptions (see the module's doc)."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._active: tuple[Subscription, ...] = ()
        self.listening = False  # whether any subscription is active: the engine's hook tests only this
        self.seq = 0  # events recorded while someone listened

    def subscribe(self, maxlen: int = 1024, wake: Callable[[], None] | None = None,
                  active: bool = True) -> Subscription:  # fmt: skip
        sub = Subscription(self, maxlen, wake)
        self._subs.append(sub)
        sub.active = active
        return sub

    def _changed(self) -> None:
        self._active = tuple(s for s in self._subs if s.active)
        self.listening = bool(self._active)

    def record(self, sample: int, voice: int, kind: str, values: Sequence[float], source: str,
               name: str | None = None) -> None:  # fmt: skip
        """An applied command (the engine's one-line hook): nothing happens unless someone listens."""
        if not self.listening:
            return
        self.seq += 1
        ev = Applied(self.seq, int(sample), int(voice), kind, values, source, name)
        for sub in self._active:
            q = sub.queue
            if len(q) >= sub.maxlen:
                sub.dropped += 1
                continue
            q.append(ev)
            if sub.wake is not None and len(q) == 1:
                sub.wake()


# ----------------------------------------------------------------------------------------------- the clock
def block_leaves_ns(sample: int, offset_ns: int, rate: int, block: int) -> int:
    """Monotonic ns when the block holding ``sample`` leaves the renderer: blocks start at multiples of
    ``block`` and sample ``s`` of a block starting at ``b`` leaves at ``offset_ns + b / rate`` (``offset_ns``:
    the monotonic time of sample 0 in the clock model of :class:`~sensorsynth.server.meter.Latency`)."""
    start = sample - sample % block
    return offset_ns + start * 1_000_000_000 // rate


def sample_ns(sample: int, offset_ns: int, rate: int) -> int:
    """Monotonic ns of ``sample`` itself on the renderer's clock (the block's time plus the sample's place in
    it): what a listener that wants the exact sample adds on top of :func:`block_leaves_ns`."""
    return offset_ns + sample * 1_000_000_000 // rate


def mono_to_unix(mono_ns: int, now_mono_ns: int, now_unix: float) -> float:
    """A monotonic time as Unix seconds, given one reading of both clocks taken together (the sender reads
    them once per datagram: the wall clock may be stepped by NTP, the monotonic one never is)."""
    return now_unix + (mono_ns - now_mono_ns) / 1e9
