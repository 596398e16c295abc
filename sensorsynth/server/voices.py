"""The voice table: which instrument each voice plays and who holds it.

Voice 0 belongs to OSC (OSC without ``/voice/<n>`` plays it); WebSocket clients and Record fits get voices from
1 up, one each, and give them back when they leave. The table is the event loop's own (one thread), and pure:
it only records; telling the renderer (an instrument change, a gain reset) is the engine's job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

from ..protocol.commands import Rejected

OSC_VOICE = 0  # OSC without /voice/<n> plays voice 0; WebSocket clients get voices from 1 up


@dataclass
class VoiceState:
    instrument: str
    owner: str | None = None  # client id holding it (None = free; OSC_VOICE belongs to OSC)
    last_used: float = field(default_factory=time.monotonic)


class VoiceTable:
    """``n`` voices, all starting on ``instrument``; voice :data:`OSC_VOICE` is held by ``"osc"``.

    Indexable and sized like a list of :class:`VoiceState` (``table[v].instrument``, ``len(table)``)."""

    def __init__(self, n: int, instrument: str) -> None:
        if n < 1:
            raise ValueError(f"a voice table needs at least one voice, got {n}")
        self._voices = [VoiceState(instrument) for _ in range(n)]
        self._voices[OSC_VOICE].owner = "osc"

    def __len__(self) -> int:
        return len(self._voices)

    def __getitem__(self, voice: int) -> VoiceState:
        return self._voices[voice]

    def __iter__(self) -> Iterator[VoiceState]:
        return iter(self._voices)

    def check(self, voice: int | None, default: int = OSC_VOICE) -> int:
        """The voice a command addresses (``default`` when it names none); Rejected("bad_voice") when there is
        no such voice."""
        v = default if voice is None else voice
        if not 0 <= v < len(self._voices):
            raise Rejected("bad_voice", f"voice {v} does not exist: this server has voices 0..{len(self._voices) - 1}")
        return v

    def touch(self, voice: int, now: float | None = None) -> VoiceState:
        """The voice's state, marked as used now."""
        state = self._voices[voice]
        state.last_used = time.monotonic() if now is None else now
        return state

    def allocate(self, owner: str) -> int | None:
        """A free voice for ``owner`` (the lowest), or None when all are taken."""
        for v, state in enumerate(self._voices):
            if state.owner is None:
                state.owner = owner
                state.last_used = time.monotonic()
                return v
        return None

    def free(self, voice: int) -> None:
        """Give a voice back (the OSC voice stays OSC's)."""
        if voice != OSC_VOICE:
            self._voices[voice].owner = None

    def summary(self) -> list[dict]:
        """The status's ``voices`` field."""
        return [{"voice": i, "instrument": s.instrument, "owner": s.owner} for i, s in enumerate(self._voices)]
